//! Least-privilege policies from activity: the IAM actions an identity's successful calls needed, each
//! scoped to the resources it was called on, generalized to a pattern when a list grows long
//! (`docs/policy-generation.md` states the rule exactly).
//!
//! One pass, every core: each reader thread folds the events it reads into its own [`Accumulator`]
//! ([`PolicyGenerator::visit`]); the accumulators are merged ([`PolicyGenerator::merge`]) and turned into
//! a policy ([`PolicyGenerator::finish`]). The lookback window ends at the identity's latest event,
//! which is known only at the end, so the accumulator keeps enough to answer for any window start:
//!
//! * Resources are kept in a tree of four levels per action: service (`arn:aws:s3:`), scope (partition,
//!   service, region, account: `arn:aws:s3:::`), root (the ARN without the value of its resource
//!   type's last variable: a bucket's `arn:aws:s3:::b/`) and ARN. A level keeps at most `limit + 1`
//!   children, the most recently used ones; a child pushed out is folded into a [`Stair`], the longest
//!   common prefix of everything folded, as a function of the window start. Whether a group holds more
//!   than `limit` children used in the window is then exact (when it holds fewer, every child used in
//!   the window is still there), and so is the common prefix of all its members used in the window.
//!   The result is the same whatever the order of the events and the split between threads (the
//!   tests check it), and memory per action is bounded by the limits, not by the log.
//! * Actions without a resource type keep only their latest use.
//!
//! Pure: events in, a policy out. The runner reads the files (`grantwatch_runtime::scan`).

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};

use grantwatch_types::{ActionMapping, Event, EventTime, Status};
use rustc_hash::{FxHashMap, FxHashSet};
use serde::Serialize;

use crate::access::AccessModel;
use crate::catalog::{ActionId, Catalog};
use crate::glob::Glob;
use crate::iam::{Effect, IamRole, IamSnapshot, InlinePolicy, PolicyDocument, Statement};

/// More than this many ARNs of one resource type under one root (a bucket, `role/`), or more than
/// this many roots in one service, region and account, become one pattern.
pub const DEFAULT_MAX_ARNS: usize = 10;
/// More than this many (region, account) pairs for one action and service become one pattern for the
/// service: the memory bound of last resort (regions and accounts are otherwise kept literal).
pub const DEFAULT_MAX_SCOPES: usize = 64;
pub const DEFAULT_LOOKBACK_DAYS: u32 = 90;
/// Longer strings in a record's resources are not taken as ARNs (IAM's own limit on a resource ARN
/// in a policy is 2,048 characters).
const MAX_ARN_LEN: usize = 2048;
/// Distinct unmapped calls kept for the warning (the alphabetically first ones).
const MAX_UNMAPPED: usize = 1000;
/// Denied requests kept as examples by a replay.
const MAX_DENIED_EXAMPLES: usize = 20;
/// The ARN partitions: an ARN in another is not an ARN a policy can name.
const PARTITIONS: &[&str] =
    &["aws", "aws-cn", "aws-us-gov", "aws-iso", "aws-iso-b", "aws-iso-e", "aws-iso-f", "aws-eusc"];

/// How resources are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResourceMode {
    /// The ARNs seen, generalized when lists get long; `*` only for actions without a resource type.
    Scoped,
    /// `*` for every action: the action list alone.
    Any,
}

/// What to generate from which events.
#[derive(Debug, Clone)]
pub struct Config {
    pub max_arns: usize,
    pub max_scopes: usize,
    pub resources: ResourceMode,
    pub lookback_days: u32,
    /// The window's end; default: the latest event of the identities. Later events are ignored.
    pub as_of: Option<EventTime>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_arns: DEFAULT_MAX_ARNS,
            max_scopes: DEFAULT_MAX_SCOPES,
            resources: ResourceMode::Scoped,
            lookback_days: DEFAULT_LOOKBACK_DAYS,
            as_of: None,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// ARN templates

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Var {
    Partition,
    Region,
    Account,
    /// A resource's own name or id; `slash`: its values may contain `/`.
    Name {
        slash: bool,
    },
}

/// Variables whose values may contain `/` (paths, object keys, names AWS lets hold slashes). Any other
/// name stops at a `/`, so `arn:aws:s3:::b/k` is an object, not a bucket, and a DynamoDB index ARN
/// is not a table. A name left out here only costs precision: its ARNs fall back to the type's pattern.
fn slash_allowed(name: &str) -> bool {
    name.contains("Path")
        || matches!(
            name,
            "ObjectName"
                | "LogGroupName"
                | "LogStreamName"
                | "ParameterNameWithoutLeadingSlash"
                | "RepositoryName"
                | "SecretId"
        )
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Lit(Box<str>),
    Var(Var),
}

/// An ARN template of the catalog (`arn:${Partition}:s3:::${BucketName}/${ObjectName}`).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Template {
    parts: Vec<Part>,
}

impl Template {
    fn parse(t: &str) -> Option<Template> {
        let mut parts = Vec::new();
        let mut rest = t;
        while let Some(start) = rest.find("${") {
            if start > 0 {
                parts.push(Part::Lit(rest.get(..start)?.into()));
            }
            let after = rest.get(start + 2..)?;
            let end = after.find('}')?;
            let name = after.get(..end)?;
            parts.push(Part::Var(match name {
                "Partition" => Var::Partition,
                "Region" => Var::Region,
                "Account" => Var::Account,
                _ => Var::Name { slash: slash_allowed(name) },
            }));
            rest = after.get(end + 1..)?;
        }
        if !rest.is_empty() {
            parts.push(Part::Lit(rest.into()));
        }
        (t.starts_with("arn:") && parts.iter().any(|p| matches!(p, Part::Var(_)))).then_some(Template { parts })
    }

    /// The service an ARN of this type names (`s3` in `arn:${Partition}:s3:::...`).
    fn service(&self) -> Option<&str> {
        match (self.parts.first()?, self.parts.get(1)?, self.parts.get(2)?) {
            (Part::Lit(a), Part::Var(Var::Partition), Part::Lit(l)) if &**a == "arn:" => {
                l.strip_prefix(':')?.split(':').next()
            }
            _ => None,
        }
    }

    fn last_var(&self) -> usize {
        self.parts.iter().rposition(|p| matches!(p, Part::Var(_))).unwrap_or(0)
    }

    /// Whether `arn` is a resource of this type; if so, where the last variable's value starts (the
    /// end of the ARN's root). Variables other than the last match the shortest value followed by the
    /// next literal.
    fn matches(&self, arn: &str) -> Option<usize> {
        let last = self.last_var();
        let tail: usize =
            self.parts.get(last + 1..)?.iter().map(|p| if let Part::Lit(l) = p { l.len() } else { 0 }).sum();
        let mut pos = 0;
        let mut root = arn.len();
        for (i, part) in self.parts.iter().enumerate() {
            let rest = arn.get(pos..)?;
            match part {
                Part::Lit(l) => {
                    if !rest.starts_with(&**l) {
                        return None;
                    }
                    pos += l.len();
                }
                Part::Var(v) => {
                    let len = if i == last {
                        rest.len().checked_sub(tail)?
                    } else {
                        match self.parts.get(i + 1) {
                            Some(Part::Lit(next)) => rest.find(&**next)?,
                            _ => 0,
                        }
                    };
                    let value = rest.get(..len)?;
                    if !accepts(*v, value, i == last) {
                        return None;
                    }
                    if i == last {
                        root = pos;
                    }
                    pos += len;
                }
            }
        }
        (pos == arn.len()).then_some(root)
    }

    /// The template with the partition, region and account filled in and every other variable `*`:
    /// any resource of this type there. With the offset of the last `*`.
    fn any_in(&self, partition: &str, region: &str, account: &str) -> (String, usize) {
        let last = self.last_var();
        let mut out = String::new();
        let mut root = 0;
        for (i, part) in self.parts.iter().enumerate() {
            if i == last {
                root = out.len();
            }
            match part {
                Part::Lit(l) => out.push_str(l),
                Part::Var(Var::Partition) => out.push_str(partition),
                Part::Var(Var::Region) => out.push_str(region),
                Part::Var(Var::Account) => out.push_str(account),
                Part::Var(Var::Name { .. }) => out.push('*'),
            }
        }
        (out, root)
    }
}

/// The ARN partition of a region (`cn-north-1` → `aws-cn`).
fn partition_of(region: &str) -> &'static str {
    if region.starts_with("cn-") {
        "aws-cn"
    } else if region.starts_with("us-gov-") {
        "aws-us-gov"
    } else {
        "aws"
    }
}

fn accepts(v: Var, value: &str, last: bool) -> bool {
    match v {
        Var::Partition => PARTITIONS.contains(&value),
        Var::Region => value.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'),
        Var::Account => value == "aws" || value.bytes().all(|b| b.is_ascii_digit()),
        Var::Name { slash } => !value.is_empty() && (slash || !value.contains('/')) && (last || !value.contains(':')),
    }
}

// ---------------------------------------------------------------------------------------------
// Prefixes

/// `p` up to and including its last `/` or `:`: generalization keeps whole path segments.
fn cut(p: &str) -> &str {
    p.rfind(['/', ':']).and_then(|i| p.get(..=i)).unwrap_or("")
}

/// The longest common prefix of `a` and `b` (on a character boundary).
fn lcp<'a>(a: &'a str, b: &str) -> &'a str {
    let mut n = a.bytes().zip(b.bytes()).take_while(|(x, y)| x == y).count();
    while !a.is_char_boundary(n) {
        n -= 1;
    }
    a.get(..n).unwrap_or("")
}

/// The longest common path prefix of the items folded into it, as a function of the window start:
/// `(t, p)` pairs, `t` descending, `p` strictly shorter down the list; for a window starting at `s`
/// the answer is the `p` of the last pair with `t >= s` (the items used at `s` or later). Prefixes are
/// kept cut ([`cut`]): `cut(lcp(cut(a), b)) == cut(lcp(a, b))`, so cutting early changes nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Stair(Vec<(i64, Box<str>)>);

impl Stair {
    fn at(&self, s: i64) -> Option<&str> {
        self.0.iter().take_while(|(t, _)| *t >= s).last().map(|(_, p)| &**p)
    }

    fn add(&mut self, t: i64, item: &str) {
        self.merge(&Stair(vec![(t, cut(item).into())]));
    }

    fn merge(&mut self, other: &Stair) {
        if other.0.is_empty() {
            return;
        }
        if self.0.is_empty() {
            self.0.clone_from(&other.0);
            return;
        }
        let mut times: Vec<i64> = self.0.iter().chain(&other.0).map(|(t, _)| *t).collect();
        times.sort_unstable_by(|a, b| b.cmp(a));
        times.dedup();
        let mut out: Vec<(i64, Box<str>)> = Vec::with_capacity(times.len());
        for t in times {
            let v = match (self.at(t), other.at(t)) {
                (Some(a), Some(b)) => cut(lcp(a, b)),
                (Some(a), None) => a,
                (None, Some(b)) => b,
                (None, None) => continue,
            };
            if out.last().is_some_and(|(_, p)| **p == *v) {
                continue;
            }
            out.push((t, v.into()));
        }
        self.0 = out;
    }
}

/// A running longest common (cut) prefix.
#[derive(Debug, Default)]
struct Lcp(Option<String>);

impl Lcp {
    fn add(&mut self, x: &str) {
        match &mut self.0 {
            None => self.0 = Some(cut(x).to_string()),
            Some(p) => {
                let n = lcp(p, x).len();
                p.truncate(n);
                let c = cut(p).len();
                p.truncate(c);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The resource tree

/// A level of the resource tree. `key` is the node's own key in its parent (for a leaf, the ARN; for
/// a group, the floor its pattern never goes below); `limits` the limits of this level and below.
trait Node: Default {
    fn last(&self) -> i64;
    fn insert(&mut self, keys: &[&str], t: i64, limits: &[usize]);
    fn merge(&mut self, other: Self, limits: &[usize]);
    /// Folds every member, with its latest use, into `stair`.
    fn fold(&self, key: &str, stair: &mut Stair);
    /// Adds the members used at `s` or later to `acc`.
    fn lcp_at(&self, key: &str, s: i64, acc: &mut Lcp);
    /// The resources for a window starting at `s`.
    fn resolve(&self, key: &str, s: i64, limits: &[usize], out: &mut Vec<String>);
    /// Nodes and stair steps held (the memory test's measure).
    #[cfg(test)]
    fn size(&self) -> usize;
}

#[derive(Debug, Clone)]
struct Leaf {
    t: i64,
}

impl Default for Leaf {
    fn default() -> Self {
        Leaf { t: i64::MIN }
    }
}

impl Node for Leaf {
    fn last(&self) -> i64 {
        self.t
    }
    fn insert(&mut self, _: &[&str], t: i64, _: &[usize]) {
        self.t = self.t.max(t);
    }
    fn merge(&mut self, other: Self, _: &[usize]) {
        self.t = self.t.max(other.t);
    }
    fn fold(&self, key: &str, stair: &mut Stair) {
        stair.add(self.t, key);
    }
    fn lcp_at(&self, key: &str, s: i64, acc: &mut Lcp) {
        if self.t >= s {
            acc.add(key);
        }
    }
    fn resolve(&self, key: &str, s: i64, _: &[usize], out: &mut Vec<String>) {
        if self.t >= s {
            out.push(key.to_string());
        }
    }
    #[cfg(test)]
    fn size(&self) -> usize {
        1
    }
}

/// At most `limit + 1` children, the most recently used; the others folded into `stair`.
///
/// Why that is exact: once full, the least recent child's time never decreases (a child is pushed
/// out only for a more recent one), so a child folded away was used no later than every child kept.
/// For a window starting at `s`, either fewer than `limit + 1` kept children are used in it, and then
/// no folded one is (all are listed), or `limit + 1` are, and the group becomes one pattern from the
/// common prefix of the kept children and the stair, both at `s`.
#[derive(Debug, Clone)]
struct Group<C> {
    top: Vec<(Box<str>, C)>,
    stair: Stair,
    last: i64,
}

impl<C> Default for Group<C> {
    fn default() -> Self {
        Group { top: Vec::new(), stair: Stair::default(), last: i64::MIN }
    }
}

impl<C: Node> Group<C> {
    fn admit(&mut self, key: Box<str>, child: C, limit: usize) {
        self.last = self.last.max(child.last());
        if self.top.len() <= limit {
            self.top.push((key, child));
            return;
        }
        let Some((i, min)) = self.top.iter().enumerate().map(|(i, (_, c))| (i, c.last())).min_by_key(|&(_, t)| t)
        else {
            return;
        };
        if child.last() > min {
            if let Some(slot) = self.top.get_mut(i) {
                let (k, old) = std::mem::replace(slot, (key, child));
                old.fold(&k, &mut self.stair);
            }
        } else {
            child.fold(&key, &mut self.stair);
        }
    }
}

impl<C: Node> Node for Group<C> {
    fn last(&self) -> i64 {
        self.last
    }

    fn insert(&mut self, keys: &[&str], t: i64, limits: &[usize]) {
        let (Some((k, rest)), Some((&limit, lower))) = (keys.split_first(), limits.split_first()) else {
            return;
        };
        self.last = self.last.max(t);
        if let Some((_, c)) = self.top.iter_mut().find(|(key, _)| **key == **k) {
            c.insert(rest, t, lower);
            return;
        }
        let mut c = C::default();
        c.insert(rest, t, lower);
        self.admit((*k).into(), c, limit);
    }

    fn merge(&mut self, other: Self, limits: &[usize]) {
        let Some((&limit, lower)) = limits.split_first() else {
            return;
        };
        self.last = self.last.max(other.last);
        for (k, c) in other.top {
            match self.top.iter_mut().find(|(key, _)| *key == k) {
                Some((_, mine)) => mine.merge(c, lower),
                None => self.admit(k, c, limit),
            }
        }
        self.stair.merge(&other.stair);
    }

    fn fold(&self, _: &str, stair: &mut Stair) {
        for (k, c) in &self.top {
            c.fold(k, stair);
        }
        stair.merge(&self.stair);
    }

    fn lcp_at(&self, _: &str, s: i64, acc: &mut Lcp) {
        for (k, c) in &self.top {
            if c.last() >= s {
                c.lcp_at(k, s, acc);
            }
        }
        if let Some(p) = self.stair.at(s) {
            acc.add(p);
        }
    }

    fn resolve(&self, key: &str, s: i64, limits: &[usize], out: &mut Vec<String>) {
        let Some((&limit, lower)) = limits.split_first() else {
            return;
        };
        let live = self.top.iter().filter(|(_, c)| c.last() >= s).count();
        if live > limit {
            let mut acc = Lcp::default();
            self.lcp_at(key, s, &mut acc);
            let p = acc.0.unwrap_or_default();
            // The floor (a root, a scope, a service) is a prefix of every member; a cut may fall
            // short of it only when it does not end with a separator.
            let prefix = if p.len() >= key.len() { p } else { key.to_string() };
            out.push(format!("{prefix}*"));
            return;
        }
        for (k, c) in &self.top {
            if c.last() >= s {
                c.resolve(k, s, lower, out);
            }
        }
    }

    #[cfg(test)]
    fn size(&self) -> usize {
        1 + self.stair.0.len() + self.top.iter().map(|(_, c)| c.size()).sum::<usize>()
    }
}

/// Service → scope → root → ARN.
type Tree = Group<Group<Group<Group<Leaf>>>>;

/// `arn:p:svc:` and `arn:p:svc:region:account:` of an ARN or pattern.
fn service_and_scope(arn: &str) -> (&str, &str) {
    let mut colons = arn.match_indices(':').map(|(i, _)| i);
    let service = colons.nth(2).and_then(|i| arn.get(..=i)).unwrap_or(arn);
    let scope = colons.nth(1).and_then(|i| arn.get(..=i)).unwrap_or(arn);
    (service, scope)
}

// ---------------------------------------------------------------------------------------------
// What a call needs

/// One resource a call needed, as a request asks for it and as a policy names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NeededResource {
    /// For a request: the ARN seen, the type's pattern when the log names no resource of the type
    /// (`arn:aws:ec2:us-east-1:111122223333:instance/*`), or `*` for actions without a resource type.
    pub request: String,
    /// In a policy: `request` with the `$` of a logged ARN escaped (`${$}`).
    pub policy: String,
    /// End of the root in `policy` (0 for `*`).
    root: usize,
}

/// One action a call needed, with its resources.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Need {
    pub action: ActionId,
    pub resources: Vec<NeededResource>,
}

/// What a successful call needed, or why nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Needs {
    /// The actions (permissionless ones left out; may be empty when all were).
    Actions(Vec<Need>),
    /// The call maps to no IAM action (or to a name the catalog lacks): listed, never dropped silently.
    Unmapped,
    /// The call needs no permission.
    Nothing,
}

/// A logged ARN as a policy names it: `$` escaped (`${$}`), so that a `${` in a name is not read as a
/// policy variable. A `*` or `?` in a name stays a wildcard: the policy then allows a little more than
/// the one resource, never less (the evaluators read `${*}` as a character no ARN holds).
fn escape(raw: &str) -> Cow<'_, str> {
    if !raw.contains('$') {
        return Cow::Borrowed(raw);
    }
    Cow::Owned(raw.replace('$', "${$}"))
}

/// ARN-looking strings in a request document's text: `arn:` up to the closing quote.
fn arns_in(text: &str) -> impl Iterator<Item = &str> {
    text.match_indices("arn:").filter_map(move |(i, _)| {
        let rest = text.get(i..)?;
        let end = rest.find(['"', '\\']).unwrap_or(rest.len());
        rest.get(..end)
    })
}

// ---------------------------------------------------------------------------------------------
// The generator

/// An unmapped call, with its latest time.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Unmapped {
    pub service: String,
    pub operation: String,
    pub last: EventTime,
}

#[derive(Debug, Clone)]
struct ActionAcc {
    last: i64,
    tree: Tree,
}

/// One reader thread's share of the evidence. Merge them with [`PolicyGenerator::merge`].
#[derive(Debug, Clone, Default)]
pub struct Accumulator {
    /// Latest event of the identities (any outcome), at or before `as_of`.
    latest: Option<i64>,
    /// Events of the identities at or before `as_of`, any outcome, any time.
    events: u64,
    actions: FxHashMap<ActionId, ActionAcc>,
    unmapped: BTreeMap<(String, String), i64>,
    unmapped_truncated: bool,
}

impl Accumulator {
    pub fn events(&self) -> u64 {
        self.events
    }
}

/// Generates one policy for a set of identities (one, or a group's members).
#[derive(Debug)]
pub struct PolicyGenerator<'c> {
    catalog: &'c Catalog,
    templates: Vec<Vec<Template>>,
    identities: FxHashSet<String>,
    cfg: Config,
}

/// A statement of a generated policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GeneratedStatement {
    #[serde(rename = "Sid")]
    pub sid: String,
    #[serde(rename = "Effect")]
    pub effect: &'static str,
    #[serde(rename = "Action")]
    pub actions: Vec<String>,
    #[serde(rename = "Resource")]
    pub resources: Vec<String>,
}

/// An IAM policy document as generated: `Version` 2012-10-17, one Allow statement per distinct
/// resource list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GeneratedPolicy {
    #[serde(rename = "Version")]
    pub version: &'static str,
    #[serde(rename = "Statement")]
    pub statements: Vec<GeneratedStatement>,
}

impl GeneratedPolicy {
    /// The policy as the evaluators read it.
    pub fn document(&self) -> PolicyDocument {
        PolicyDocument {
            statements: self
                .statements
                .iter()
                .map(|s| Statement {
                    sid: Some(s.sid.clone()),
                    effect: Effect::Allow,
                    not_action: false,
                    actions: s.actions.clone(),
                    not_resource: false,
                    resources: s.resources.clone(),
                    condition: None,
                    principal: None,
                })
                .collect(),
        }
    }

    pub fn action_count(&self) -> usize {
        self.statements.iter().map(|s| s.actions.len()).sum()
    }
}

/// The result of [`PolicyGenerator::finish`].
#[derive(Debug, Clone)]
pub struct Generated {
    pub policy: GeneratedPolicy,
    /// `[start, end]`, both included; `None` when no event of the identities was seen.
    pub window: Option<(EventTime, EventTime)>,
    /// Events of the identities read, at or before the window's end, any outcome.
    pub events_seen: u64,
    /// Unmapped successful calls of the window, sorted.
    pub unmapped: Vec<Unmapped>,
    /// More distinct unmapped calls were seen than are kept.
    pub unmapped_truncated: bool,
}

impl<'c> PolicyGenerator<'c> {
    pub fn new(catalog: &'c Catalog, identities: impl IntoIterator<Item = String>, cfg: Config) -> Self {
        let templates = (0..catalog.len() as ActionId)
            .map(|id| catalog.resource_arns(id).iter().filter_map(|t| Template::parse(t)).collect())
            .collect();
        PolicyGenerator { catalog, templates, identities: identities.into_iter().collect(), cfg }
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    pub fn catalog(&self) -> &Catalog {
        self.catalog
    }

    /// Whether the event is one of the identities', at or before the window's end.
    pub fn is_subject(&self, ev: &Event) -> bool {
        self.identities.contains(&ev.actor.uid) && self.cfg.as_of.is_none_or(|a| ev.time <= a)
    }

    /// Whether the action supports resource-level permissions (the catalog names a resource type).
    pub fn has_resource_type(&self, id: ActionId) -> bool {
        self.templates.get(id as usize).is_some_and(|t| !t.is_empty())
    }

    /// What a call needed: its actions (those the normalizer derived, dependent ones included), each
    /// with the resources of its resource types that the record names, else those a request document
    /// names, else the types' patterns in the call's region and account.
    pub fn needs(&self, ev: &Event) -> Needs {
        match ev.mapping {
            ActionMapping::NoPermission => return Needs::Nothing,
            ActionMapping::Unmapped => return Needs::Unmapped,
            ActionMapping::Direct | ActionMapping::Exception => {}
        }
        if ev.actions.is_empty() {
            return Needs::Nothing;
        }
        let mut out = Vec::with_capacity(ev.actions.len());
        for name in &ev.actions {
            let Some(id) = self.catalog.lookup(name) else {
                return Needs::Unmapped;
            };
            if self.catalog.permissionless().contains(id) {
                continue;
            }
            out.push(Need { action: id, resources: self.resources_for(id, ev) });
        }
        Needs::Actions(out)
    }

    fn resources_for(&self, id: ActionId, ev: &Event) -> Vec<NeededResource> {
        let templates = self.templates.get(id as usize).map(Vec::as_slice).unwrap_or_default();
        if templates.is_empty() {
            return vec![NeededResource { request: "*".into(), policy: "*".into(), root: 0 }];
        }
        let matched = |arn: &str| -> Option<NeededResource> {
            if arn.len() > MAX_ARN_LEN || !arn.starts_with("arn:") {
                return None;
            }
            let root = templates.iter().find_map(|t| t.matches(arn))?;
            let policy = escape(arn);
            let root = escape(arn.get(..root)?).len();
            Some(NeededResource { request: arn.to_string(), policy: policy.into_owned(), root })
        };
        let mut out: Vec<NeededResource> = ev.resources.iter().filter_map(|r| matched(r)).collect();
        if out.is_empty()
            && let Some(req) = &ev.request
        {
            out = arns_in(req.get()).filter_map(matched).collect();
            out.sort_by(|a, b| a.request.cmp(&b.request));
            out.dedup();
        }
        if out.is_empty() {
            let region = if ev.region == crate::cloudtrail::UNKNOWN { "*" } else { ev.region.as_str() };
            let account = if ev.account_uid == crate::cloudtrail::UNKNOWN { "*" } else { ev.account_uid.as_str() };
            let partition = partition_of(&ev.region);
            // The action's own service's resource types when it has any (`ec2:StartInstances`: the
            // instance, not the License Manager configuration it may also touch), else all of them
            // (`sts:AssumeRole`: the IAM role).
            let prefix = self.catalog.prefix(id);
            let own: Vec<&Template> = templates.iter().filter(|t| t.service() == Some(prefix)).collect();
            let chosen: Vec<&Template> = if own.is_empty() { templates.iter().collect() } else { own };
            for t in chosen {
                let (pattern, root) = t.any_in(partition, region, account);
                out.push(NeededResource { request: pattern.clone(), policy: pattern, root });
            }
        }
        out
    }

    /// Folds one event into `acc`.
    pub fn visit(&self, acc: &mut Accumulator, ev: &Event) {
        if !self.is_subject(ev) {
            return;
        }
        let t = ev.time.millis();
        acc.latest = Some(acc.latest.map_or(t, |l| l.max(t)));
        acc.events += 1;
        if ev.status != Status::Success {
            return;
        }
        match self.needs(ev) {
            Needs::Nothing => {}
            Needs::Unmapped => note_unmapped(acc, &ev.api.service, &ev.api.operation, t),
            Needs::Actions(needs) => {
                let limits = self.limits();
                for need in needs {
                    let a =
                        acc.actions.entry(need.action).or_insert_with(|| ActionAcc { last: t, tree: Tree::default() });
                    a.last = a.last.max(t);
                    if self.cfg.resources == ResourceMode::Any || !self.has_resource_type(need.action) {
                        continue;
                    }
                    for r in &need.resources {
                        let (service, scope) = service_and_scope(&r.policy);
                        let root = r.policy.get(..r.root).unwrap_or(scope);
                        a.tree.insert(&[service, scope, root, &r.policy], t, &limits);
                    }
                }
            }
        }
    }

    fn limits(&self) -> [usize; 4] {
        [usize::MAX, self.cfg.max_scopes.max(1), self.cfg.max_arns.max(1), self.cfg.max_arns.max(1)]
    }

    /// Merges `other` into `into`. Any order of merges gives the same policy.
    pub fn merge(&self, into: &mut Accumulator, other: Accumulator) {
        into.latest = match (into.latest, other.latest) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        into.events += other.events;
        let limits = self.limits();
        for (id, a) in other.actions {
            match into.actions.get_mut(&id) {
                Some(mine) => {
                    mine.last = mine.last.max(a.last);
                    mine.tree.merge(a.tree, &limits);
                }
                None => {
                    into.actions.insert(id, a);
                }
            }
        }
        into.unmapped_truncated |= other.unmapped_truncated;
        for ((s, o), t) in other.unmapped {
            note_unmapped(into, &s, &o, t);
        }
    }

    /// The window: `as_of` (else the latest event of the identities) and `lookback_days` before it.
    pub fn window(&self, acc: &Accumulator) -> Option<(EventTime, EventTime)> {
        let end = self.cfg.as_of.or(acc.latest.map(EventTime))?;
        Some((end.minus_days(self.cfg.lookback_days), end))
    }

    /// The policy for the window.
    pub fn finish(&self, acc: &Accumulator) -> Generated {
        let window = self.window(acc);
        let s = window.map_or(i64::MAX, |(start, _)| start.millis());
        let limits = self.limits();
        let mut by_resources: BTreeMap<Vec<String>, Vec<ActionId>> = BTreeMap::new();
        for (&id, a) in &acc.actions {
            if a.last < s {
                continue;
            }
            let resources = if self.cfg.resources == ResourceMode::Any || !self.has_resource_type(id) {
                vec!["*".to_string()]
            } else {
                let mut out = Vec::new();
                a.tree.resolve("", s, &limits, &mut out);
                tidy(out)
            };
            if !resources.is_empty() {
                by_resources.entry(resources).or_default().push(id);
            }
        }
        let mut statements = Vec::with_capacity(by_resources.len());
        let mut sids: FxHashMap<String, usize> = FxHashMap::default();
        for (resources, mut ids) in by_resources {
            ids.sort_by_cached_key(|&id| self.catalog.name(id).to_ascii_lowercase());
            let base = self.sid_base(&ids, &resources);
            let n = sids.entry(base.clone()).or_insert(0);
            *n += 1;
            let sid = match *n {
                1 => base,
                // `S32` would read as a service name.
                n if base.ends_with(|c: char| c.is_ascii_digit()) => format!("{base}Part{n}"),
                n => format!("{base}{n}"),
            };
            statements.push(GeneratedStatement {
                sid,
                effect: "Allow",
                actions: ids.iter().map(|&id| self.catalog.name(id).to_string()).collect(),
                resources,
            });
        }
        let unmapped = acc
            .unmapped
            .iter()
            .filter(|(_, t)| **t >= s)
            .map(|((service, operation), t)| Unmapped {
                service: service.clone(),
                operation: operation.clone(),
                last: EventTime(*t),
            })
            .collect();
        Generated {
            policy: GeneratedPolicy { version: "2012-10-17", statements },
            window,
            events_seen: acc.events,
            unmapped,
            unmapped_truncated: acc.unmapped_truncated,
        }
    }

    /// A statement's Sid: its services in CamelCase (`S3`, `DynamodbKms`), `Services` past three, or
    /// `AnyResource` for the `*` statement; a number from the second statement of the same name on
    /// (`Ecr2`, `S3Part2`).
    fn sid_base(&self, ids: &[ActionId], resources: &[String]) -> String {
        if resources == ["*"] {
            return "AnyResource".to_string();
        }
        let mut prefixes: Vec<&str> = ids.iter().map(|&id| self.catalog.prefix(id)).collect();
        prefixes.sort_unstable();
        prefixes.dedup();
        if prefixes.len() > 3 {
            return "Services".to_string();
        }
        let mut out = String::new();
        for p in prefixes {
            let mut up = true;
            for c in p.chars() {
                if !c.is_ascii_alphanumeric() {
                    up = true;
                    continue;
                }
                out.push(if up { c.to_ascii_uppercase() } else { c });
                up = false;
            }
        }
        if out.is_empty() { "Scoped".to_string() } else { out }
    }

    // -----------------------------------------------------------------------------------------
    // Replay

    /// Replays one event against a policy (an [`AccessModel`] of one subject holding it, see
    /// [`replay_model`]): a successful call of the identities in `window` needing a permission counts as
    /// replayed, and as denied when any (action, resource) it needed is not allowed.
    pub fn replay(
        &self,
        model: &AccessModel,
        subject: u32,
        window: (EventTime, EventTime),
        counts: &mut ReplayCounts,
        ev: &Event,
    ) {
        if !self.identities.contains(&ev.actor.uid)
            || ev.status != Status::Success
            || ev.time < window.0
            || ev.time > window.1
        {
            return;
        }
        let Needs::Actions(needs) = self.needs(ev) else { return };
        if needs.is_empty() {
            return;
        }
        counts.events += 1;
        let mut denied = false;
        for need in &needs {
            let action = self.catalog.name(need.action);
            for r in &need.resources {
                counts.requests += 1;
                if !model.decide(subject, action, &r.request).allowed() {
                    counts.denied_requests += 1;
                    denied = true;
                    if counts.examples.len() < MAX_DENIED_EXAMPLES {
                        counts.examples.insert((action.to_string(), r.request.clone()));
                    }
                }
            }
        }
        if denied {
            counts.denied += 1;
        }
    }
}

fn note_unmapped(acc: &mut Accumulator, service: &str, operation: &str, t: i64) {
    let key = (service.to_string(), operation.to_string());
    if let Some(last) = acc.unmapped.get_mut(&key) {
        *last = (*last).max(t);
        return;
    }
    acc.unmapped.insert(key, t);
    if acc.unmapped.len() > MAX_UNMAPPED {
        // Keep the alphabetically first: the same list whatever the order the events came in.
        acc.unmapped.pop_last();
        acc.unmapped_truncated = true;
    }
}

/// Sorted, without duplicates, and without ARNs a pattern of the list already covers. A pattern holding
/// an escape (`${*}`) is not used to cover: the matcher would read its `*` as a wildcard.
fn tidy(mut out: Vec<String>) -> Vec<String> {
    out.sort_unstable();
    out.dedup();
    let patterns: Vec<String> = out.iter().filter(|p| p.contains(['*', '?']) && !p.contains("${")).cloned().collect();
    if patterns.is_empty() {
        return out;
    }
    out.retain(|x| !patterns.iter().any(|p| p != x && Glob::RESOURCE.matches(p, x)));
    out
}

/// What a replay counted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplayCounts {
    /// Successful calls of the window that needed a permission.
    pub events: u64,
    /// Of those, the calls with an (action, resource) the policy does not allow.
    pub denied: u64,
    pub requests: u64,
    pub denied_requests: u64,
    /// Some denied (action, resource) pairs.
    pub examples: BTreeSet<(String, String)>,
}

impl ReplayCounts {
    pub fn merge(&mut self, other: ReplayCounts) {
        self.events += other.events;
        self.denied += other.denied;
        self.requests += other.requests;
        self.denied_requests += other.denied_requests;
        for e in other.examples {
            if self.examples.len() >= MAX_DENIED_EXAMPLES {
                break;
            }
            self.examples.insert(e);
        }
    }
}

/// An [`AccessModel`] holding one role, in `account`, whose only policy is `document`: the identity
/// side of a request decides alone (no resource policies, no organization).
pub fn replay_model(document: &PolicyDocument, account: &str) -> (AccessModel, u32) {
    let arn = format!("arn:aws:iam::{account}:role/grantwatch-policy-replay");
    let mut snapshot = IamSnapshot::new();
    snapshot.accounts = vec![account.to_string()];
    snapshot.roles.push(IamRole {
        arn: arn.clone(),
        account: account.to_string(),
        name: "grantwatch-policy-replay".to_string(),
        path: "/".to_string(),
        created: None,
        last_used: None,
        inline: vec![InlinePolicy { name: "generated".to_string(), document: document.clone() }],
        attached: Vec::new(),
        boundary: None,
        trust_policy: None,
        instance_profiles: Vec::new(),
    });
    let model = AccessModel::new(&snapshot, &[], None);
    let subject = model.subject(&arn).unwrap_or(0);
    (model, subject)
}

#[cfg(test)]
mod tests {
    use std::sync::OnceLock;

    use grantwatch_types::Api;
    use proptest::prelude::*;

    use super::*;
    use crate::cloudtrail::Normalizer;
    use crate::iam::parse_policy_document;
    use crate::testing::{ALICE, event};

    const ACCOUNT: &str = "111122223333";
    const BOB: &str = "arn:aws:iam::111122223333:user/bob";
    const DAY: i64 = 86_400_000;
    /// 2024-01-01T00:00:00Z
    const T0: i64 = 1_704_067_200_000;

    fn catalog() -> &'static Catalog {
        static C: OnceLock<Catalog> = OnceLock::new();
        C.get_or_init(|| Catalog::aws().unwrap())
    }

    fn normalizer() -> &'static Normalizer {
        static N: OnceLock<Normalizer> = OnceLock::new();
        N.get_or_init(|| Normalizer::aws().unwrap())
    }

    /// A successful call of `action` by alice at `t` (ms) on `resources`.
    fn ev(action: &str, resources: &[&str], t: i64) -> Event {
        let mut e = event("e", EventTime(t));
        let (p, n) = action.split_once(':').unwrap();
        e.api = Api { service: format!("{p}.amazonaws.com"), operation: n.into() };
        e.actions = vec![action.into()];
        e.resources = resources.iter().map(|r| r.to_string()).collect();
        e
    }

    fn object(bucket: &str, key: &str) -> String {
        format!("arn:aws:s3:::{bucket}/{key}")
    }

    fn run(g: &PolicyGenerator<'_>, events: &[Event]) -> Generated {
        let mut acc = Accumulator::default();
        for e in events {
            g.visit(&mut acc, e);
        }
        g.finish(&acc)
    }

    fn generate(cfg: Config, events: &[Event]) -> Generated {
        run(&PolicyGenerator::new(catalog(), [ALICE.to_string()], cfg), events)
    }

    /// The resources of the statement holding `action` (empty: not in the policy).
    fn resources_of(got: &Generated, action: &str) -> Vec<String> {
        got.policy
            .statements
            .iter()
            .find(|s| s.actions.iter().any(|a| a == action))
            .map(|s| s.resources.clone())
            .unwrap_or_default()
    }

    fn replay(g: &PolicyGenerator<'_>, got: &Generated, events: &[Event]) -> ReplayCounts {
        let (model, subject) = replay_model(&got.policy.document(), ACCOUNT);
        let mut counts = ReplayCounts::default();
        if let Some(window) = got.window {
            for e in events {
                g.replay(&model, subject, window, &mut counts, e);
            }
        }
        counts
    }

    #[test]
    fn every_catalog_template_parses() {
        let c = catalog();
        let mut bad = Vec::new();
        for id in 0..c.len() as ActionId {
            for t in c.resource_arns(id).iter().filter(|t| *t != "*") {
                if Template::parse(t).is_none() {
                    bad.push(t.clone());
                }
            }
        }
        assert!(bad.is_empty(), "{bad:?}");
    }

    #[test]
    fn templates_tell_resource_types_apart() {
        let t = |s: &str| Template::parse(s).unwrap();
        let obj = t("arn:${Partition}:s3:::${BucketName}/${ObjectName}");
        let bucket = t("arn:${Partition}:s3:::${BucketName}");
        assert_eq!(obj.matches("arn:aws:s3:::b/k/x.json"), Some("arn:aws:s3:::b/".len()));
        assert_eq!(bucket.matches("arn:aws:s3:::b/k/x.json"), None);
        assert_eq!(bucket.matches("arn:aws:s3:::b"), Some("arn:aws:s3:::".len()));
        assert_eq!(obj.matches("arn:aws:s3:::b"), None);
        assert_eq!(obj.matches("arn:nope:s3:::b/k"), None, "unknown partition");
        let role = t("arn:${Partition}:iam::${Account}:role/${RoleNameWithPath}");
        assert_eq!(role.matches("arn:aws:iam::111122223333:role/ops/r"), Some("arn:aws:iam::111122223333:role/".len()));
        assert_eq!(role.matches("arn:aws:iam::111122223333:user/u"), None);
        let table = t("arn:${Partition}:dynamodb:${Region}:${Account}:table/${TableName}");
        assert!(table.matches("arn:aws:dynamodb:us-east-1:111122223333:table/t").is_some());
        assert_eq!(table.matches("arn:aws:dynamodb:us-east-1:111122223333:table/t/index/i"), None);
        let stream =
            t("arn:${Partition}:logs:${Region}:${Account}:log-group:${LogGroupName}:log-stream:${LogStreamName}");
        assert_eq!(
            stream.matches("arn:aws:logs:eu-west-1:111122223333:log-group:/aws/lambda/f:log-stream:2024/01/01/x"),
            Some("arn:aws:logs:eu-west-1:111122223333:log-group:/aws/lambda/f:log-stream:".len())
        );
        assert_eq!(
            role.any_in("aws", "us-east-1", ACCOUNT),
            ("arn:aws:iam::111122223333:role/*".to_string(), "arn:aws:iam::111122223333:role/".len())
        );
    }

    #[test]
    fn resources_are_scoped_to_the_actions_types() {
        let b = "arn:aws:s3:::data-bucket";
        let o = object("data-bucket", "in/a.json");
        let events = vec![
            ev("s3:GetObject", &[b, &o], T0),
            ev("s3:ListBucket", &[b, &o], T0),
            ev("ec2:DescribeInstances", &[], T0),
            ev("ec2:StartInstances", &[], T0),
        ];
        let got = generate(Config::default(), &events);
        assert_eq!(resources_of(&got, "s3:GetObject"), std::slice::from_ref(&o));
        assert_eq!(resources_of(&got, "s3:ListBucket"), [b]);
        assert_eq!(resources_of(&got, "ec2:DescribeInstances"), ["*"]);
        // The log names no instance: any instance of the call's region and account, never a bare `*`.
        assert_eq!(resources_of(&got, "ec2:StartInstances"), ["arn:aws:ec2:us-east-1:111122223333:instance/*"]);
        let any = got.policy.statements.iter().find(|s| s.resources == ["*"]).unwrap();
        assert_eq!(any.sid, "AnyResource");
        assert_eq!(any.actions, ["ec2:DescribeInstances"]);

        let cfg = Config { resources: ResourceMode::Any, ..Config::default() };
        let got = generate(cfg, &events);
        assert_eq!(got.policy.statements.len(), 1);
        assert_eq!(got.policy.statements[0].resources, ["*"]);
        assert_eq!(got.policy.action_count(), 4);
    }

    #[test]
    fn long_lists_become_the_longest_common_path_prefix() {
        let day = |i: usize| format!("data/d{i:02}/f.json");
        // Ten objects: listed.
        let ten: Vec<Event> = (0..10).map(|i| ev("s3:GetObject", &[&object("b", &day(i))], T0)).collect();
        assert_eq!(resources_of(&generate(Config::default(), &ten), "s3:GetObject").len(), 10);
        // Eleven under data/: data/*, not the bucket.
        let mut eleven = ten.clone();
        eleven.push(ev("s3:GetObject", &[&object("b", &day(10))], T0));
        assert_eq!(resources_of(&generate(Config::default(), &eleven), "s3:GetObject"), ["arn:aws:s3:::b/data/*"]);
        // Across prefixes of the bucket: the bucket's objects.
        let mut mixed: Vec<Event> = (0..6).map(|i| ev("s3:GetObject", &[&object("b", &day(i))], T0)).collect();
        mixed.extend((0..5).map(|i| ev("s3:GetObject", &[&object("b", &format!("logs/{i}"))], T0)));
        assert_eq!(resources_of(&generate(Config::default(), &mixed), "s3:GetObject"), ["arn:aws:s3:::b/*"]);
        // Eleven buckets: the scope (S3 ARNs carry no region or account).
        let buckets: Vec<Event> =
            (0..11).map(|i| ev("s3:GetObject", &[&object(&format!("bucket-{i}"), "k")], T0)).collect();
        assert_eq!(resources_of(&generate(Config::default(), &buckets), "s3:GetObject"), ["arn:aws:s3:::*"]);
        // Regions and accounts stay literal.
        let f = |region: &str, i: usize| format!("arn:aws:lambda:{region}:{ACCOUNT}:function:fn-{i}");
        let mut lambdas: Vec<Event> = (0..11).map(|i| ev("lambda:InvokeFunction", &[&f("us-east-1", i)], T0)).collect();
        lambdas.push(ev("lambda:InvokeFunction", &[&f("eu-west-1", 0)], T0));
        assert_eq!(
            resources_of(&generate(Config::default(), &lambdas), "lambda:InvokeFunction"),
            [f("eu-west-1", 0), "arn:aws:lambda:us-east-1:111122223333:function:*".to_string()]
        );
        // Past the scope cap (the memory bound of last resort), the service.
        let cfg = Config { max_scopes: 1, ..Config::default() };
        assert_eq!(resources_of(&generate(cfg, &lambdas), "lambda:InvokeFunction"), ["arn:aws:lambda:*"]);
        // A smaller N.
        let cfg = Config { max_arns: 2, ..Config::default() };
        let three: Vec<Event> = (0..3).map(|i| ev("s3:GetObject", &[&object("b", &day(i))], T0)).collect();
        assert_eq!(resources_of(&generate(cfg, &three), "s3:GetObject"), ["arn:aws:s3:::b/data/*"]);
    }

    #[test]
    fn a_pattern_absorbs_the_arns_it_covers() {
        let events = vec![
            ev("ec2:StartInstances", &[], T0),
            ev("ec2:StartInstances", &["arn:aws:ec2:us-east-1:111122223333:instance/i-1"], T0),
        ];
        assert_eq!(
            resources_of(&generate(Config::default(), &events), "ec2:StartInstances"),
            ["arn:aws:ec2:us-east-1:111122223333:instance/*"]
        );
    }

    #[test]
    fn the_window_is_event_time_and_exact() {
        let recent = object("b", "new.json");
        let old = object("b", "old.json");
        let events = vec![ev("s3:GetObject", &[&old], T0), ev("s3:GetObject", &[&recent], T0 + 100 * DAY)];
        let got = generate(Config::default(), &events);
        assert_eq!(resources_of(&got, "s3:GetObject"), std::slice::from_ref(&recent));
        assert_eq!(got.window, Some((EventTime(T0 + 10 * DAY), EventTime(T0 + 100 * DAY))));
        // --as-of: later events do not exist; the window ends there.
        let cfg = Config { as_of: Some(EventTime(T0 + 50 * DAY)), ..Config::default() };
        let got = generate(cfg, &events);
        assert_eq!(resources_of(&got, "s3:GetObject"), std::slice::from_ref(&old));
        assert_eq!(got.events_seen, 1);
        // Twenty objects read long ago do not make the one read in the window a pattern.
        let mut many: Vec<Event> =
            (0..20).map(|i| ev("s3:GetObject", &[&object("b", &format!("x/{i}"))], T0 + i * DAY)).collect();
        many.push(ev("s3:GetObject", &[&recent], T0 + 200 * DAY));
        assert_eq!(resources_of(&generate(Config::default(), &many), "s3:GetObject"), std::slice::from_ref(&recent));
        let cfg = Config { lookback_days: 365, ..Config::default() };
        assert_eq!(resources_of(&generate(cfg, &many), "s3:GetObject"), ["arn:aws:s3:::b/*"]);
        // An action used only before the window is left out.
        let events = vec![ev("s3:PutObject", &[&old], T0), ev("s3:GetObject", &[&recent], T0 + 100 * DAY)];
        let got = generate(Config::default(), &events);
        assert!(resources_of(&got, "s3:PutObject").is_empty());
        assert_eq!(got.policy.action_count(), 1);
    }

    #[test]
    fn dependent_actions_come_with_the_call() {
        // Lambda's CreateFunction (logged with its API version) passes the execution role: the normalizer
        // adds iam:PassRole, scoped to the role the request names.
        let raw = r#"{"eventVersion":"1.08","eventID":"c1","eventTime":"2024-03-01T10:00:00Z",
            "eventSource":"lambda.amazonaws.com","eventName":"CreateFunction20150331","awsRegion":"eu-west-1",
            "recipientAccountId":"111122223333","readOnly":false,
            "userIdentity":{"type":"IAMUser","arn":"arn:aws:iam::111122223333:user/alice","accountId":"111122223333","userName":"alice"},
            "requestParameters":{"functionName":"resize","role":"arn:aws:iam::111122223333:role/service/resize-exec","runtime":"python3.12"}}"#;
        let e = normalizer().normalize(raw.as_bytes()).unwrap();
        assert!(e.actions.iter().any(|a| a == "iam:PassRole"), "{:?}", e.actions);
        let got = generate(Config::default(), &[e]);
        assert_eq!(resources_of(&got, "iam:PassRole"), ["arn:aws:iam::111122223333:role/service/resize-exec"]);
        assert_eq!(
            resources_of(&got, "lambda:CreateFunction"),
            ["arn:aws:lambda:eu-west-1:111122223333:function:resize"]
        );
    }

    #[test]
    fn only_successful_calls_needing_a_permission_count_and_unmapped_ones_are_listed() {
        let mut failed = ev("s3:PutObject", &[&object("b", "k")], T0);
        failed.status = Status::Failure;
        let mut free = ev("sts:GetCallerIdentity", &[], T0);
        free.actions.clear();
        free.mapping = ActionMapping::NoPermission;
        let mut unmapped = ev("s3:InternalReplicateShardMetadata", &[], T0);
        unmapped.actions.clear();
        unmapped.mapping = ActionMapping::Unmapped;
        let not_in_catalog = ev("s3:NoSuchAction", &[], T0);
        let got =
            generate(Config::default(), &[failed, free, unmapped, not_in_catalog, ev("s3:ListAllMyBuckets", &[], T0)]);
        assert_eq!(got.policy.action_count(), 1, "{:?}", got.policy);
        assert_eq!(resources_of(&got, "s3:ListAllMyBuckets"), ["*"]);
        let names: Vec<(&str, &str)> =
            got.unmapped.iter().map(|u| (u.service.as_str(), u.operation.as_str())).collect();
        assert_eq!(
            names,
            [("s3.amazonaws.com", "InternalReplicateShardMetadata"), ("s3.amazonaws.com", "NoSuchAction")]
        );
        assert_eq!(got.events_seen, 5);
    }

    #[test]
    fn a_groups_policy_comes_from_its_members() {
        let mut by_bob = ev("sqs:SendMessage", &["arn:aws:sqs:us-east-1:111122223333:q"], T0);
        by_bob.actor.uid = BOB.into();
        let mut by_carol = ev("sqs:DeleteQueue", &["arn:aws:sqs:us-east-1:111122223333:q"], T0);
        by_carol.actor.uid = "arn:aws:iam::111122223333:user/carol".into();
        let events = vec![ev("s3:ListAllMyBuckets", &[], T0 - DAY), by_bob, by_carol];
        let g = PolicyGenerator::new(catalog(), [ALICE.to_string(), BOB.to_string()], Config::default());
        let got = run(&g, &events);
        let actions: Vec<&str> =
            got.policy.statements.iter().flat_map(|s| s.actions.iter().map(String::as_str)).collect();
        assert_eq!(actions, ["s3:ListAllMyBuckets", "sqs:SendMessage"]);
        assert_eq!(got.window.map(|w| w.1), Some(EventTime(T0)), "ends at the members' latest event");
    }

    #[test]
    fn logged_wildcards_are_escaped_and_the_policy_parses_back() {
        let odd = object("b", "weird*name?$.txt");
        let var = object("b", "${aws:username}/x");
        let events =
            vec![ev("s3:GetObject", &[&odd], T0), ev("s3:PutObject", &[&var], T0), ev("s3:ListAllMyBuckets", &[], T0)];
        let g = PolicyGenerator::new(catalog(), [ALICE.to_string()], Config::default());
        let got = run(&g, &events);
        assert_eq!(resources_of(&got, "s3:GetObject"), ["arn:aws:s3:::b/weird*name?${$}.txt"]);
        let json = serde_json::to_value(&got.policy).unwrap();
        assert_eq!(json["Version"], "2012-10-17");
        let parsed = parse_policy_document(&json, "generated", "policy", false).unwrap();
        assert_eq!(parsed, got.policy.document());
        assert_eq!(resources_of(&got, "s3:PutObject"), ["arn:aws:s3:::b/${$}{aws:username}/x"]);
        let counts = replay(&g, &got, &events);
        assert_eq!((counts.events, counts.denied), (3, 0));
    }

    #[test]
    fn replay_counts_what_a_policy_misses() {
        let g = PolicyGenerator::new(catalog(), [ALICE.to_string()], Config::default());
        let events = vec![ev("s3:GetObject", &[&object("b", "k")], T0), ev("s3:ListAllMyBuckets", &[], T0)];
        let got = run(&g, &events);
        let mut narrow = got.clone();
        narrow.policy.statements.retain(|s| s.resources != ["*"]);
        let counts = replay(&g, &narrow, &events);
        assert_eq!((counts.events, counts.denied, counts.denied_requests), (2, 1, 1));
        assert!(counts.examples.contains(&("s3:ListAllMyBuckets".to_string(), "*".to_string())));
    }

    #[test]
    fn memory_stays_bounded_whatever_the_log() {
        // 30,000 distinct objects in 40 buckets, 3 regions' worth of functions: the tree keeps at most
        // (limit + 1) children per level and a short stair per group.
        let cfg = Config::default();
        let g = PolicyGenerator::new(catalog(), [ALICE.to_string()], cfg.clone());
        let mut acc = Accumulator::default();
        for i in 0..30_000i64 {
            let o = object(&format!("bucket-{}", i % 40), &format!("p{}/{}/{i}.json", i % 7, i % 13));
            g.visit(&mut acc, &ev("s3:GetObject", &[&o], T0 + i * 60_000));
        }
        let tree = &acc.actions[&catalog().lookup("s3:GetObject").unwrap()].tree;
        let bound = (cfg.max_arns + 1) * (cfg.max_arns + 1) * 2 + 64;
        assert!(tree.size() <= bound, "{} > {bound}", tree.size());
        let got = g.finish(&acc);
        // Forty buckets: more than ten roots in S3's one scope.
        assert_eq!(resources_of(&got, "s3:GetObject"), ["arn:aws:s3:::*"]);
    }

    #[test]
    fn the_stair_answers_for_every_window_start() {
        let mut s = Stair::default();
        s.add(30, "arn:aws:s3:::b/x/1");
        s.add(20, "arn:aws:s3:::b/x/2");
        s.add(10, "arn:aws:s3:::b/y/3");
        assert_eq!(s.at(31), None);
        assert_eq!(s.at(30), Some("arn:aws:s3:::b/x/"));
        assert_eq!(s.at(15), Some("arn:aws:s3:::b/x/"));
        assert_eq!(s.at(5), Some("arn:aws:s3:::b/"));
        let mut other = Stair::default();
        other.add(25, "arn:aws:s3:::c/z");
        s.merge(&other);
        assert_eq!(s.at(26), Some("arn:aws:s3:::b/x/"));
        assert_eq!(s.at(25), Some("arn:aws:s3:::"));
    }

    /// Actions of the property tests, with how their resources are made.
    const ACTIONS: &[&str] = &[
        "s3:GetObject",
        "s3:PutObject",
        "s3:ListBucket",
        "lambda:InvokeFunction",
        "ec2:DescribeInstances",
        "iam:PassRole",
    ];
    const REGIONS: &[&str] = &["us-east-1", "eu-west-1", "ap-south-1"];

    fn arb_event() -> impl Strategy<Value = Event> {
        (0..ACTIONS.len(), 0..14usize, 0..3usize, 0..25usize, 0..REGIONS.len(), 0..200i64, prop::bool::weighted(0.9))
            .prop_map(|(a, bucket, prefix, key, region, day, ok)| {
                let action = ACTIONS[a];
                let bucket = format!("bkt-{bucket}");
                let resources = match action {
                    "s3:GetObject" | "s3:PutObject" => vec![
                        format!("arn:aws:s3:::{bucket}"),
                        object(&bucket, &format!("{}/{key}.json", ["data", "logs", "in/deep"][prefix])),
                    ],
                    "s3:ListBucket" => vec![format!("arn:aws:s3:::{bucket}")],
                    "lambda:InvokeFunction" => {
                        vec![format!("arn:aws:lambda:{}:{ACCOUNT}:function:fn-{key}", REGIONS[region])]
                    }
                    _ => Vec::new(),
                };
                let refs: Vec<&str> = resources.iter().map(String::as_str).collect();
                let mut e = ev(action, &refs, T0 + day * DAY + key as i64);
                e.region = REGIONS[region].to_string();
                if !ok {
                    e.status = Status::Failure;
                }
                e
            })
    }

    /// The rule applied directly to every (action, resource) the window's successful calls needed,
    /// all in memory: what the one-pass tree must give.
    fn brute_force(
        g: &PolicyGenerator<'_>,
        events: &[Event],
        window: (EventTime, EventTime),
    ) -> Vec<(String, Vec<String>)> {
        type Roots = BTreeMap<String, BTreeSet<String>>;
        let mut per_action: BTreeMap<ActionId, BTreeMap<String, BTreeMap<String, Roots>>> = BTreeMap::new();
        let mut plain: BTreeSet<ActionId> = BTreeSet::new();
        for e in events.iter().filter(|e| e.status == Status::Success && e.time >= window.0 && e.time <= window.1) {
            let Needs::Actions(needs) = g.needs(e) else { continue };
            for n in needs {
                if !g.has_resource_type(n.action) {
                    plain.insert(n.action);
                    continue;
                }
                for r in n.resources {
                    let (service, scope) = service_and_scope(&r.policy);
                    let root = r.policy[..r.root].to_string();
                    per_action
                        .entry(n.action)
                        .or_default()
                        .entry(service.to_string())
                        .or_default()
                        .entry(scope.to_string())
                        .or_default()
                        .entry(root)
                        .or_default()
                        .insert(r.policy.clone());
                }
            }
        }
        let pattern = |floor: &str, members: &mut dyn Iterator<Item = &String>| {
            let mut p: Option<String> = None;
            for m in members {
                p = Some(match p {
                    None => m.clone(),
                    Some(p) => lcp(&p, m).to_string(),
                });
            }
            let p = cut(&p.unwrap_or_default()).to_string();
            format!("{}*", if p.len() >= floor.len() { p.as_str() } else { floor })
        };
        let (n, scopes_max) = (g.config().max_arns, g.config().max_scopes);
        let mut out: Vec<(String, Vec<String>)> =
            plain.into_iter().map(|id| (catalog().name(id).to_string(), vec!["*".to_string()])).collect();
        for (id, services) in per_action {
            let mut list = Vec::new();
            for (service, scopes) in &services {
                if scopes.len() > scopes_max {
                    list.push(pattern(service, &mut scopes.values().flat_map(|r| r.values().flatten())));
                    continue;
                }
                for (scope, roots) in scopes {
                    if roots.len() > n {
                        list.push(pattern(scope, &mut roots.values().flatten()));
                        continue;
                    }
                    for (root, arns) in roots {
                        if arns.len() > n {
                            list.push(pattern(root, &mut arns.iter()));
                        } else {
                            list.extend(arns.iter().cloned());
                        }
                    }
                }
            }
            out.push((catalog().name(id).to_string(), tidy(list)));
        }
        out.sort();
        out
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        /// Whatever the events, their order and their split between threads: the same policy, and it
        /// allows every (action, resource) the window's successful calls needed, and no action they did
        /// not use.
        #[test]
        fn generalization_never_denies_what_was_seen(
            events in prop::collection::vec(arb_event(), 1..250),
            max_arns in 1usize..12,
            max_scopes in 1usize..4,
            lookback in 20u32..150,
            split in 1usize..5,
        ) {
            let cfg = Config { max_arns, max_scopes, lookback_days: lookback, ..Config::default() };
            let g = PolicyGenerator::new(catalog(), [ALICE.to_string()], cfg);
            let got = run(&g, &events);
            // Reversed, dealt to `split` accumulators, merged last to first.
            let mut accs: Vec<Accumulator> = (0..split).map(|_| Accumulator::default()).collect();
            for (i, e) in events.iter().rev().enumerate() {
                g.visit(&mut accs[i % split], e);
            }
            let mut merged = accs.pop().unwrap();
            while let Some(a) = accs.pop() {
                g.merge(&mut merged, a);
            }
            prop_assert_eq!(&g.finish(&merged).policy, &got.policy);

            let mut per_action: Vec<(String, Vec<String>)> = got
                .policy
                .statements
                .iter()
                .flat_map(|s| s.actions.iter().map(|a| (a.clone(), s.resources.clone())))
                .collect();
            per_action.sort();
            prop_assert_eq!(per_action, brute_force(&g, &events, got.window.unwrap()));

            let counts = replay(&g, &got, &events);
            prop_assert_eq!(counts.denied, 0, "{:?}", counts.examples);
            let (start, end) = got.window.unwrap();
            let used: BTreeSet<&str> = events
                .iter()
                .filter(|e| e.status == Status::Success && e.time >= start && e.time <= end)
                .flat_map(|e| e.actions.iter().map(String::as_str))
                .collect();
            let granted: BTreeSet<&str> =
                got.policy.statements.iter().flat_map(|s| s.actions.iter().map(String::as_str)).collect();
            prop_assert_eq!(granted, used);
            for s in &got.policy.statements {
                for r in &s.resources {
                    prop_assert!(r != "*" || s.actions.iter().all(|a| a == "ec2:DescribeInstances"), "{:?}", s);
                }
            }
        }
    }
}
