//! One human across clouds: which person is behind which identities, and what they hold and use
//! everywhere together (`docs/identity-providers.md`).
//!
//! **People** come from the directories ([`crate::idp`]): Okta users, Google Workspace users, IAM
//! Identity Center users; **humans** are people joined across directories, plus the mapping file's
//! humans. Cloud identities (AWS, Azure, GCP) are then linked to humans. Links, strongest first:
//!
//! 1. **The mapping file** ([`Mapping`]): a human's identities and addresses, and what is never
//!    linked. It always wins, including "not linked".
//! 2. **IAM Identity Center**: an account assignment materializes as an `AWSReservedSSO_*` role
//!    (shared by everyone assigned the permission set there); a role session is a person's when
//!    `onBehalfOf.userId` is their `UserId` or the session name their `UserName`.
//! 3. **One email address**, case-insensitive, aliases included: Okta `profile.email`, login and
//!    `secondEmail`; Workspace `primaryEmail`, `emails` and aliases; Identity Center `Emails` (and a
//!    `UserName` that is an address); and the addresses callers pass for a cloud identity (Entra
//!    UPN and mail, GCP `user:` members, an IAM user's `email` tag).
//!
//! **Ambiguity is never guessed.** People are joined by addresses in rounds of decreasing strength
//! (the mapping's addresses, then primary ones, then secondary ones). A round's join that would put
//! two people of one directory (the same Okta org, Workspace customer or identity store), or two of
//! the mapping's humans, into one human is not made: the addresses involved are *ambiguous*, link
//! nothing, and each gets a warning. A cloud identity whose addresses point at two humans, or at an
//! ambiguous address, is not linked either (warning). Joins of an earlier round stand.
//!
//! A human's **id** is the mapping's id, else their canonical (lower-cased) primary address:
//! Okta's first, then Workspace's, then Identity Center's, the smallest of a directory's; a person
//! with no usable address keeps their directory uid. Cloud identities whose addresses no directory
//! knows still meet each other: they form humans of their own, named by their smallest address.
//!
//! Memory is bounded by the directories, the mapping and the identities registered, never by logs:
//! sessions are resolved on demand and not stored.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use grantwatch_types::{
    DirectoryAccount, DirectorySource, HumanFinding, HumanFlag, HumanIdentity, IdentityFinding, LinkBy, Pci, PciBand,
    StatusFlag,
};
use serde::Deserialize;

use crate::idp::canonical_email;
use crate::idp::identity_center::{IdentityCenter, SsoRoleMatcher, parse_sso_role, parse_sso_role_name};
use crate::idp::okta::OktaDirectory;
use crate::idp::workspace::WorkspaceDirectory;
use crate::pci::{PCI_VERSION, SATURATION};

// ---------------------------------------------------------------------------------------------
// The mapping file
// ---------------------------------------------------------------------------------------------

/// The mapping file (`--humans FILE`), JSON:
///
/// ```json
/// {
///   "humans": [
///     {"id": "alice@example.com", "display_name": "Alice Doe",
///      "identities": ["arn:aws:iam::111122223333:user/alice", "azure:/subscriptions/s1/principals/0b1c..."],
///      "emails": ["alice.doe@example.org"], "note": "two addresses since the merger"}
///   ],
///   "unlink": [
///     {"identity": "arn:aws:iam::111122223333:user/breakglass", "note": "shared"},
///     {"email": "ops@example.com", "note": "a team mailbox, not a person"}
///   ]
/// }
/// ```
///
/// Unknown fields are refused (a typo must not silently unlink nobody); `note` is free text.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Mapping {
    pub humans: Vec<MappedHuman>,
    /// Identity uids (cloud identities or directory accounts) never linked to anyone.
    pub unlink_identities: BTreeSet<String>,
    /// Canonical addresses that link nothing.
    pub unlink_emails: BTreeSet<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MappedHuman {
    /// Lower-cased when it is an address.
    pub id: String,
    pub display_name: Option<String>,
    /// Cloud identity uids and directory account uids (`okta:{org}/users/{id}`, ...).
    pub identities: Vec<String>,
    /// Canonical addresses; the id, when it is one, is among them.
    pub emails: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMapping {
    #[serde(default)]
    humans: Vec<RawHuman>,
    #[serde(default)]
    unlink: Vec<RawUnlink>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHuman {
    id: String,
    #[serde(default)]
    display_name: Option<String>,
    #[serde(default)]
    identities: Vec<String>,
    #[serde(default)]
    emails: Vec<String>,
    #[serde(default)]
    #[allow(dead_code)]
    note: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUnlink {
    #[serde(default)]
    identity: Option<String>,
    #[serde(default)]
    email: Option<String>,
    #[serde(default)]
    #[allow(dead_code)]
    note: Option<String>,
}

/// Why a mapping file was refused. A mapping is explicit, so a contradiction in it is an error,
/// not a warning: the file wins over everything, and must therefore say one thing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MappingError {
    #[error("mapping file is not valid: {0}")]
    Json(String),
    #[error("humans[{index}]: {reason}")]
    Human { index: usize, reason: String },
    #[error("unlink[{index}]: {reason}")]
    Unlink { index: usize, reason: String },
}

impl Mapping {
    /// Parses and checks a mapping file: ids non-empty and distinct, each identity and address
    /// claimed by one human at most, nothing both claimed and unlinked.
    pub fn parse(bytes: &[u8]) -> Result<Mapping, MappingError> {
        let raw: RawMapping = serde_json::from_slice(bytes).map_err(|e| MappingError::Json(e.to_string()))?;
        let mut m = Mapping::default();
        for (index, u) in raw.unlink.into_iter().enumerate() {
            let err = |reason: &str| MappingError::Unlink { index, reason: reason.to_string() };
            match (u.identity, u.email) {
                (Some(i), None) if !i.trim().is_empty() => {
                    m.unlink_identities.insert(i.trim().to_string());
                }
                (None, Some(e)) => {
                    m.unlink_emails.insert(canonical_email(&e).ok_or_else(|| err("email is not an address"))?);
                }
                _ => return Err(err("give exactly one of identity or email")),
            }
        }
        let mut ids = BTreeSet::new();
        let mut claimed_identities: BTreeMap<String, usize> = BTreeMap::new();
        let mut claimed_emails: BTreeMap<String, usize> = BTreeMap::new();
        for (index, h) in raw.humans.into_iter().enumerate() {
            let err = |reason: String| MappingError::Human { index, reason };
            let id = h.id.trim();
            if id.is_empty() {
                return Err(err("empty id".to_string()));
            }
            let id = canonical_email(id).unwrap_or_else(|| id.to_string());
            if !ids.insert(id.clone()) {
                return Err(err(format!("id {id:?} is used twice")));
            }
            let mut emails = Vec::new();
            for e in h.emails.iter().map(String::as_str).chain(canonical_email(&id).is_some().then_some(id.as_str())) {
                let e = canonical_email(e).ok_or_else(|| err(format!("{e:?} is not an address")))?;
                if m.unlink_emails.contains(&e) {
                    return Err(err(format!("{e} is also unlinked")));
                }
                if let Some(other) = claimed_emails.insert(e.clone(), index).filter(|o| *o != index) {
                    return Err(err(format!("{e} is also claimed by humans[{other}]")));
                }
                if !emails.contains(&e) {
                    emails.push(e);
                }
            }
            let mut identities = Vec::new();
            for i in h.identities.iter().map(|i| i.trim()).filter(|i| !i.is_empty()) {
                if m.unlink_identities.contains(i) {
                    return Err(err(format!("{i} is also unlinked")));
                }
                if let Some(other) = claimed_identities.insert(i.to_string(), index).filter(|o| *o != index) {
                    return Err(err(format!("{i} is also claimed by humans[{other}]")));
                }
                identities.push(i.to_string());
            }
            m.humans.push(MappedHuman { id, display_name: h.display_name, identities, emails });
        }
        Ok(m)
    }
}

// ---------------------------------------------------------------------------------------------
// The linker
// ---------------------------------------------------------------------------------------------

/// One human: the people of the directories and the mapping joined.
#[derive(Debug, Clone, PartialEq)]
pub struct Human {
    pub id: String,
    pub display_name: Option<String>,
    /// Which directories know them, sorted.
    pub sources: Vec<DirectorySource>,
    /// Their directory accounts.
    pub accounts: Vec<DirectoryAccount>,
    /// Every address that links to them (ambiguous and unlinked ones excluded), sorted.
    pub emails: Vec<String>,
    /// The identities linked to them when the linker was built (mapping, Identity Center roles,
    /// registered identities), with the rule; sorted by uid.
    pub identities: Vec<(String, LinkBy)>,
}

/// How an identity links, or why it does not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Link<'a> {
    Human {
        id: &'a str,
        by: LinkBy,
    },
    /// Identity Center roles assigned to several humans: each of them may act as it.
    Shared(Vec<&'a str>),
    /// The mapping file says: not linked.
    Unlinked,
    /// Its addresses point at several humans, or at an address two people claim.
    Ambiguous,
    None,
}

/// Who is behind an event's actor, for stamping events ([`grantwatch_types::Actor::human`]) so that
/// alerts name the person: the identity's human as linking decided, or, for a role session, the
/// human of that session (a shared Identity Center role is a different person per session).
#[derive(Debug)]
pub struct HumanIndex {
    /// Identity uid → human id, as linked (`IdentityGrants::human`).
    by_uid: HashMap<String, String>,
    linker: std::sync::Arc<HumanLinker>,
}

impl HumanIndex {
    /// `linked`: every identity's (uid, human) after linking.
    pub fn new(linker: std::sync::Arc<HumanLinker>, linked: impl IntoIterator<Item = (String, String)>) -> Self {
        HumanIndex { by_uid: linked.into_iter().collect(), linker }
    }

    /// The human behind `actor`, if one is known.
    pub fn human_of(&self, actor: &grantwatch_types::Actor) -> Option<&str> {
        if actor.kind == grantwatch_types::IdentityKind::Role
            && (actor.session_name.is_some() || actor.on_behalf_of.is_some())
            && let Some(h) =
                self.linker.human_of_session(&actor.uid, actor.session_name.as_deref(), actor.on_behalf_of.as_deref())
        {
            return Some(h);
        }
        if let Some(h) = self.by_uid.get(&actor.uid) {
            return Some(h);
        }
        // Directory accounts (Okta, Workspace users) are linked by their ids.
        self.linker.human_of_identity(&actor.uid, &[])
    }

    /// Whether any identity is linked.
    pub fn is_empty(&self) -> bool {
        self.by_uid.is_empty() && self.linker.humans().next().is_none()
    }
}

/// Where the linker's inputs go before [`HumanLinkerBuilder::build`].
#[derive(Debug, Default)]
pub struct HumanLinkerBuilder {
    okta: Vec<OktaDirectory>,
    workspace: Vec<WorkspaceDirectory>,
    idc: Vec<IdentityCenter>,
    sso_roles: SsoRoleMatcher,
    identities: Vec<(String, Vec<String>)>,
    mapping: Mapping,
}

impl HumanLinkerBuilder {
    pub fn okta(mut self, d: OktaDirectory) -> Self {
        self.okta.push(d);
        self
    }
    pub fn workspace(mut self, d: WorkspaceDirectory) -> Self {
        self.workspace.push(d);
        self
    }
    pub fn identity_center(mut self, d: IdentityCenter) -> Self {
        self.idc.push(d);
        self
    }
    /// The IAM snapshot's `AWSReservedSSO_*` roles (see [`SsoRoleMatcher`]).
    pub fn sso_roles(mut self, m: SsoRoleMatcher) -> Self {
        self.sso_roles = m;
        self
    }
    /// A cloud identity and the addresses it is known by (`IdentityGrants::emails`).
    pub fn identity(mut self, uid: &str, emails: &[String]) -> Self {
        self.identities.push((uid.to_string(), emails.to_vec()));
        self
    }
    pub fn mapping(mut self, m: Mapping) -> Self {
        self.mapping = m;
        self
    }

    pub fn build(self) -> HumanLinker {
        build(self)
    }
}

/// A directory account, before people are joined.
#[derive(Debug)]
struct Person {
    tenant: (DirectorySource, String),
    uid: String,
    display_name: Option<String>,
    account: DirectoryAccount,
    /// (canonical address, round): 1 primary, 2 secondary.
    emails: Vec<(String, u8)>,
    /// Identity Center: (UserId, UserName).
    idc: Option<(String, String)>,
    /// Okta and Workspace: the bare user id, for uids written with a default org.
    bare_id: Option<(DirectorySource, String)>,
}

/// Links identities and role sessions to humans; see the module documentation.
#[derive(Debug)]
pub struct HumanLinker {
    humans: Vec<Human>,
    /// Identity uid → link decided at build (mapping, directory accounts, registered identities,
    /// Identity Center roles as `Shared` or single).
    by_uid: HashMap<String, Decided>,
    /// Canonical address → human index, or `None` when ambiguous.
    by_email: HashMap<String, Option<usize>>,
    /// (source, bare user id) → human, for `okta:okta/users/{id}`-style uids.
    by_bare_id: HashMap<(DirectorySource, String), usize>,
    /// Identity Center UserId → human.
    by_idc_user_id: HashMap<String, usize>,
    /// Lower-cased Identity Center UserName → humans (one per identity store that has the name).
    by_idc_user_name: HashMap<String, Vec<usize>>,
    unlinked: BTreeSet<String>,
    unlinked_emails: BTreeSet<String>,
    warnings: Vec<String>,
}

#[derive(Debug, Clone)]
enum Decided {
    One(usize, LinkBy),
    Shared(Vec<usize>),
    Ambiguous,
}

/// Union-find over indices, with path halving.
struct Dsu(Vec<usize>);

impl Dsu {
    fn new(n: usize) -> Self {
        Dsu((0..n).collect())
    }
    fn find(&mut self, mut x: usize) -> usize {
        while self.0[x] != x {
            self.0[x] = self.0[self.0[x]];
            x = self.0[x];
        }
        x
    }
    fn union(&mut self, a: usize, b: usize) {
        let (ra, rb) = (self.find(a), self.find(b));
        if ra != rb {
            // The smaller index is the root: deterministic whatever the union order.
            let (lo, hi) = if ra < rb { (ra, rb) } else { (rb, ra) };
            self.0[hi] = lo;
        }
    }
}

fn people(b: &HumanLinkerBuilder) -> Vec<Person> {
    let mut out = Vec::new();
    for d in &b.okta {
        for u in d.users.values() {
            let (primary, secondary) = u.emails();
            let uid = d.user_uid(u);
            let org = uid.strip_prefix("okta:").and_then(|r| r.split('/').next()).unwrap_or_default().to_string();
            out.push(Person {
                tenant: (DirectorySource::Okta, org),
                display_name: u.display_name(),
                account: DirectoryAccount {
                    source: DirectorySource::Okta,
                    id: uid.clone(),
                    login: u.login.clone().unwrap_or_else(|| u.id.clone()),
                    status: u.status.clone(),
                    disabled: u.disabled(),
                    mfa: d.mfa_of(&u.id),
                    last_login: u.last_login,
                },
                uid,
                emails: primary.into_iter().map(|e| (e, 1)).chain(secondary.into_iter().map(|e| (e, 2))).collect(),
                idc: None,
                bare_id: Some((DirectorySource::Okta, u.id.clone())),
            });
        }
    }
    for d in &b.workspace {
        for u in d.users.values() {
            let uid = d.user_uid(u);
            let customer = uid.strip_prefix("workspace:").and_then(|r| r.split('/').next()).unwrap_or_default();
            out.push(Person {
                tenant: (DirectorySource::Workspace, customer.to_string()),
                display_name: u.full_name.clone(),
                account: DirectoryAccount {
                    source: DirectorySource::Workspace,
                    id: uid.clone(),
                    login: u.primary_email.clone(),
                    status: Some(u.status().to_string()),
                    disabled: u.disabled(),
                    mfa: u.enrolled_2sv,
                    last_login: u.last_login,
                },
                uid,
                emails: std::iter::once((u.primary_email.clone(), 1))
                    .chain(u.other_emails.iter().map(|e| (e.clone(), 2)))
                    .collect(),
                idc: None,
                bare_id: Some((DirectorySource::Workspace, u.id.clone())),
            });
        }
    }
    for d in &b.idc {
        for u in d.users.values() {
            let mut emails: Vec<(String, u8)> = Vec::new();
            // With no address marked primary, the first listed one is taken as primary (the CLI
            // lists the primary first when there is one).
            let primaries = u.primary_emails.max(usize::from(!u.emails.is_empty()));
            for (i, e) in u.emails.iter().enumerate() {
                emails.push((e.clone(), if i < primaries { 1 } else { 2 }));
            }
            if let Some(e) = canonical_email(&u.user_name).filter(|e| !emails.iter().any(|(x, _)| x == e)) {
                emails.push((e, 1));
            }
            let uid = u.uid();
            out.push(Person {
                tenant: (
                    DirectorySource::IdentityCenter,
                    u.identity_store_id
                        .clone()
                        .unwrap_or_else(|| crate::idp::identity_center::DEFAULT_STORE.to_string()),
                ),
                display_name: u.display_name.clone(),
                account: DirectoryAccount {
                    source: DirectorySource::IdentityCenter,
                    id: uid.clone(),
                    login: u.user_name.clone(),
                    status: None,
                    disabled: false,
                    mfa: None,
                    last_login: None,
                },
                uid,
                emails,
                idc: Some((u.user_id.clone(), u.user_name.clone())),
                bare_id: None,
            });
        }
    }
    out
}

fn build(b: HumanLinkerBuilder) -> HumanLinker {
    let mut warnings = Vec::new();
    let unlinked = b.mapping.unlink_identities.clone();
    let unlinked_emails = b.mapping.unlink_emails.clone();
    // People the mapping unlinks are not people here (e.g. an Okta service user).
    let persons: Vec<Person> = people(&b).into_iter().filter(|p| !unlinked.contains(&p.uid)).collect();
    let np = persons.len();
    let nm = b.mapping.humans.len();
    let mut dsu = Dsu::new(np + nm);

    // The mapping's identities that are directory accounts join their people to the mapped human.
    let person_of_uid: HashMap<&str, usize> = persons.iter().enumerate().map(|(i, p)| (p.uid.as_str(), i)).collect();
    for (m, h) in b.mapping.humans.iter().enumerate() {
        for i in &h.identities {
            if let Some(&p) = person_of_uid.get(i.as_str()) {
                dsu.union(p, np + m);
            }
        }
    }

    // Claims: address → (node, round). Round 0: the mapping's addresses.
    let mut claims: BTreeMap<&str, Vec<(usize, u8)>> = BTreeMap::new();
    for (m, h) in b.mapping.humans.iter().enumerate() {
        for e in &h.emails {
            claims.entry(e.as_str()).or_default().push((np + m, 0));
        }
    }
    for (i, p) in persons.iter().enumerate() {
        for (e, round) in &p.emails {
            if !unlinked_emails.contains(e) {
                claims.entry(e.as_str()).or_default().push((i, *round));
            }
        }
    }

    // The anchors of a node: its directory, or its mapped human. Two anchors of the same kind in one
    // human is a conflict.
    let anchor = |node: usize| -> (DirectorySource, String, bool) {
        match persons.get(node) {
            Some(p) => (p.tenant.0, p.tenant.1.clone(), false),
            None => (DirectorySource::Okta, String::new(), true),
        }
    };
    let mut ambiguous: BTreeSet<&str> = BTreeSet::new();
    for round in 0..=2u8 {
        // The joins this round proposes, over the components so far.
        let groups: Vec<(&str, Vec<usize>)> = claims
            .iter()
            .filter(|(e, _)| !ambiguous.contains(*e))
            .map(|(e, c)| {
                let mut roots: Vec<usize> = c.iter().filter(|(_, r)| *r <= round).map(|(n, _)| dsu.find(*n)).collect();
                roots.sort_unstable();
                roots.dedup();
                (*e, roots)
            })
            .filter(|(_, roots)| roots.len() > 1)
            .collect();
        if groups.is_empty() {
            continue;
        }
        // Anchors of each current component.
        let mut anchors: HashMap<usize, BTreeSet<(DirectorySource, String, bool)>> = HashMap::new();
        for n in 0..np + nm {
            let r = dsu.find(n);
            anchors.entry(r).or_default().insert(anchor(n));
        }
        // Tentative joins, to see which would conflict.
        let mut trial = Dsu::new(np + nm);
        for (_, roots) in &groups {
            for w in roots.windows(2) {
                trial.union(w[0], w[1]);
            }
        }
        let mut seen: HashMap<usize, BTreeSet<(DirectorySource, String, bool)>> = HashMap::new();
        let mut conflicting: BTreeSet<usize> = BTreeSet::new();
        let mut roots_done: BTreeSet<usize> = BTreeSet::new();
        for (_, roots) in &groups {
            for &r in roots {
                if !roots_done.insert(r) {
                    continue;
                }
                let t = trial.find(r);
                let set = seen.entry(t).or_default();
                for a in anchors.get(&r).into_iter().flatten() {
                    if !set.insert(a.clone()) {
                        conflicting.insert(t);
                    }
                }
            }
        }
        for (e, roots) in groups {
            let t = trial.find(roots[0]);
            if conflicting.contains(&t) {
                ambiguous.insert(e);
                warnings.push(format!(
                    "{e}: claimed by people who are distinct in one directory (or by two of the mapping's humans); \
                     not used to link anyone"
                ));
            } else {
                for w in roots.windows(2) {
                    dsu.union(w[0], w[1]);
                }
            }
        }
    }

    // Humans: the components holding a person or a mapped human, in a stable order.
    let mut comp_of_root: BTreeMap<usize, usize> = BTreeMap::new();
    let mut members: Vec<Vec<usize>> = Vec::new();
    for n in 0..np + nm {
        let r = dsu.find(n);
        let h = *comp_of_root.entry(r).or_insert_with(|| {
            members.push(Vec::new());
            members.len() - 1
        });
        members[h].push(n);
    }
    // Id candidates: each component's primary addresses. An address that is primary in two
    // components (two people of one directory sharing it) names neither; one that is merely
    // ambiguous for linking (someone else's secondary address too) still names its owner.
    let candidates_of = |nodes: &[usize]| -> Vec<(DirectorySource, String)> {
        let mut c: Vec<(DirectorySource, String)> = nodes
            .iter()
            .filter_map(|&n| persons.get(n))
            .flat_map(|p| p.emails.iter().filter(|(_, r)| *r == 1).map(|(e, _)| (p.tenant.0, e.clone())))
            .filter(|(_, e)| !unlinked_emails.contains(e))
            .collect();
        c.sort();
        c.dedup();
        c
    };
    let mut primary_in: HashMap<String, usize> = HashMap::new();
    for nodes in &members {
        let mut es: Vec<String> = candidates_of(nodes).into_iter().map(|(_, e)| e).collect();
        es.sort();
        es.dedup();
        es.into_iter().for_each(|e| *primary_in.entry(e).or_default() += 1);
    }
    let mut humans: Vec<Human> = Vec::with_capacity(members.len());
    let mut taken_ids: BTreeSet<String> = BTreeSet::new();
    for nodes in &members {
        let mapped = nodes.iter().find_map(|&n| n.checked_sub(np)).map(|m| &b.mapping.humans[m]);
        let ps: Vec<&Person> = nodes.iter().filter_map(|&n| persons.get(n)).collect();
        let mut id = match mapped {
            Some(m) => m.id.clone(),
            None => match candidates_of(nodes).into_iter().find(|(_, e)| primary_in.get(e) == Some(&1)) {
                Some((_, e)) => e,
                None => ps.iter().map(|p| p.uid.clone()).min().unwrap_or_default(),
            },
        };
        if taken_ids.contains(&id) {
            // Only a mapping id spelled like a directory uid can meet another; keep both apart.
            let base = id.clone();
            let mut k = 2;
            while taken_ids.contains(&id) {
                id = format!("{base}#{k}");
                k += 1;
            }
            warnings.push(format!("human id {base} is taken twice; the second is {id}"));
        }
        taken_ids.insert(id.clone());
        let display_name = mapped.and_then(|m| m.display_name.clone()).or_else(|| {
            let mut by_source: Vec<(DirectorySource, &str)> =
                ps.iter().filter_map(|p| p.display_name.as_deref().map(|d| (p.tenant.0, d))).collect();
            by_source.sort();
            by_source.first().map(|(_, d)| (*d).to_string())
        });
        let mut sources: Vec<DirectorySource> = ps.iter().map(|p| p.tenant.0).collect();
        sources.sort();
        sources.dedup();
        let mut accounts: Vec<DirectoryAccount> = ps.iter().map(|p| p.account.clone()).collect();
        accounts.sort_by(|a, b| (a.source, &a.id).cmp(&(b.source, &b.id)));
        humans.push(Human { id, display_name, sources, accounts, emails: Vec::new(), identities: Vec::new() });
    }
    let human_of_node = |dsu: &mut Dsu, n: usize| comp_of_root[&dsu.find(n)];

    // Addresses → humans.
    let mut by_email: HashMap<String, Option<usize>> = HashMap::new();
    for (e, c) in &claims {
        if ambiguous.contains(e) {
            by_email.insert((*e).to_string(), None);
            continue;
        }
        let mut hs: Vec<usize> = c.iter().map(|(n, _)| human_of_node(&mut dsu, *n)).collect();
        hs.sort_unstable();
        hs.dedup();
        // Unjoined claims only remain where a round rejected them, and those are ambiguous.
        let h = if hs.len() == 1 { Some(hs[0]) } else { None };
        by_email.insert((*e).to_string(), h);
    }
    // The mapping's addresses are its humans' whatever the directories claim.
    for (m, h) in b.mapping.humans.iter().enumerate() {
        let hi = human_of_node(&mut dsu, np + m);
        for e in &h.emails {
            by_email.insert(e.clone(), Some(hi));
        }
    }
    for (e, h) in &by_email {
        if let Some(h) = h {
            humans[*h].emails.push(e.clone());
        }
    }

    let mut by_uid: HashMap<String, Decided> = HashMap::new();
    let mut by_bare_id = HashMap::new();
    let mut by_idc_user_id = HashMap::new();
    let mut by_idc_user_name: HashMap<String, Vec<usize>> = HashMap::new();
    for (i, p) in persons.iter().enumerate() {
        let h = human_of_node(&mut dsu, i);
        by_uid.insert(p.uid.clone(), Decided::One(h, LinkBy::Directory));
        if let Some(bare) = &p.bare_id {
            by_bare_id.insert(bare.clone(), h);
        }
        if let Some((user_id, user_name)) = &p.idc {
            by_idc_user_id.insert(user_id.clone(), h);
            let v = by_idc_user_name.entry(user_name.to_ascii_lowercase()).or_default();
            if !v.contains(&h) {
                v.push(h);
            }
        }
    }

    // Identity Center: assignments → roles.
    let idc_person: HashMap<&str, usize> =
        persons.iter().enumerate().filter_map(|(i, p)| p.idc.as_ref().map(|(id, _)| (id.as_str(), i))).collect();
    let mut role_humans: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for d in &b.idc {
        for (user_id, role) in d.materialize(&b.sso_roles) {
            let Some(&p) = idc_person.get(user_id.as_str()) else { continue };
            let h = human_of_node(&mut dsu, p);
            let v = role_humans.entry(role).or_default();
            if !v.contains(&h) {
                v.push(h);
            }
        }
    }
    for (role, mut hs) in role_humans {
        if unlinked.contains(&role) {
            continue;
        }
        hs.sort_unstable();
        let d = if hs.len() == 1 { Decided::One(hs[0], LinkBy::IdentityCenter) } else { Decided::Shared(hs) };
        by_uid.insert(role, d);
    }

    // Registered cloud identities by address; those no directory knows meet among themselves.
    let mut orphans: Vec<(String, Vec<String>)> = Vec::new();
    for (uid, emails) in b.identities {
        if unlinked.contains(&uid) || by_uid.contains_key(&uid) {
            continue;
        }
        let emails: Vec<String> =
            emails.iter().filter_map(|e| canonical_email(e)).filter(|e| !unlinked_emails.contains(e)).collect();
        match resolve_emails(&by_email, &emails) {
            Resolved::One(h) => {
                by_uid.insert(uid, Decided::One(h, LinkBy::Email));
            }
            Resolved::Ambiguous => {
                warnings.push(format!(
                    "{uid}: its addresses point at several humans or at an ambiguous address; not linked"
                ));
                by_uid.insert(uid, Decided::Ambiguous);
            }
            Resolved::None if emails.is_empty() => {}
            Resolved::None => orphans.push((uid, emails)),
        }
    }
    orphan_humans(orphans, &mut humans, &mut by_email, &mut by_uid, &taken_ids);

    // The mapping's identities: last, so they win over every rule above.
    for (m, h) in b.mapping.humans.iter().enumerate() {
        let hi = human_of_node(&mut dsu, np + m);
        for i in &h.identities {
            by_uid.insert(
                i.clone(),
                Decided::One(
                    hi,
                    if person_of_uid.contains_key(i.as_str()) { LinkBy::Directory } else { LinkBy::Mapping },
                ),
            );
        }
    }
    for (uid, d) in &by_uid {
        match d {
            Decided::One(h, by) if *by != LinkBy::Directory => humans[*h].identities.push((uid.clone(), *by)),
            Decided::Shared(hs) => {
                hs.iter().for_each(|h| humans[*h].identities.push((uid.clone(), LinkBy::IdentityCenter)))
            }
            _ => {}
        }
    }
    for h in &mut humans {
        h.emails.sort();
        h.identities.sort();
    }
    warnings.sort();
    HumanLinker {
        humans,
        by_uid,
        by_email,
        by_bare_id,
        by_idc_user_id,
        by_idc_user_name,
        unlinked,
        unlinked_emails,
        warnings,
    }
}

enum Resolved {
    One(usize),
    Ambiguous,
    None,
}

fn resolve_emails(by_email: &HashMap<String, Option<usize>>, emails: &[String]) -> Resolved {
    let mut found: Option<usize> = None;
    for e in emails {
        match by_email.get(e) {
            Some(None) => return Resolved::Ambiguous,
            Some(Some(h)) if found.is_some_and(|f| f != *h) => return Resolved::Ambiguous,
            Some(Some(h)) => found = Some(*h),
            None => {}
        }
    }
    found.map_or(Resolved::None, Resolved::One)
}

/// Identities whose addresses no directory knows: joined by shared addresses into humans of their
/// own, named by their smallest address.
fn orphan_humans(
    orphans: Vec<(String, Vec<String>)>,
    humans: &mut Vec<Human>,
    by_email: &mut HashMap<String, Option<usize>>,
    by_uid: &mut HashMap<String, Decided>,
    taken_ids: &BTreeSet<String>,
) {
    let mut index: BTreeMap<&str, usize> = BTreeMap::new();
    let mut emails: Vec<&str> = orphans.iter().flat_map(|(_, es)| es.iter().map(String::as_str)).collect();
    emails.sort_unstable();
    emails.dedup();
    for (i, e) in emails.iter().enumerate() {
        index.insert(e, i);
    }
    let mut dsu = Dsu::new(emails.len());
    for (_, es) in &orphans {
        for w in es.windows(2) {
            dsu.union(index[w[0].as_str()], index[w[1].as_str()]);
        }
    }
    let mut human_of_root: BTreeMap<usize, usize> = BTreeMap::new();
    for (i, e) in emails.iter().enumerate() {
        let r = dsu.find(i);
        let h = *human_of_root.entry(r).or_insert_with(|| {
            // The root is the smallest index, so the smallest address of the component.
            let id = emails[r].to_string();
            debug_assert!(!taken_ids.contains(&id));
            humans.push(Human {
                id,
                display_name: None,
                sources: Vec::new(),
                accounts: Vec::new(),
                emails: Vec::new(),
                identities: Vec::new(),
            });
            humans.len() - 1
        });
        humans[h].emails.push((*e).to_string());
        by_email.insert((*e).to_string(), Some(h));
    }
    for (uid, es) in &orphans {
        let h = human_of_root[&dsu.find(index[es[0].as_str()])];
        by_uid.insert(uid.clone(), Decided::One(h, LinkBy::Email));
    }
}

impl HumanLinker {
    pub fn builder() -> HumanLinkerBuilder {
        HumanLinkerBuilder::default()
    }

    /// Every human, in a stable order (directory people first, then identity-only humans).
    pub fn humans(&self) -> impl Iterator<Item = &Human> {
        self.humans.iter()
    }

    pub fn human(&self, id: &str) -> Option<&Human> {
        self.humans.iter().find(|h| h.id == id)
    }

    /// What the linker noticed and refused to guess (ambiguous addresses, identities pointing at
    /// several humans), sorted.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// The human of an identity: its link decided at build (mapping, directory account, registered
    /// identity, an Identity Center role assigned to one human), else its `emails`. `None` when
    /// unlinked, ambiguous, shared by several humans, or unknown.
    pub fn human_of_identity(&self, uid: &str, emails: &[String]) -> Option<&str> {
        match self.link_of_identity(uid, emails) {
            Link::Human { id, .. } => Some(id),
            _ => None,
        }
    }

    /// [`Self::human_of_identity`], with the rule or the reason.
    pub fn link_of_identity(&self, uid: &str, emails: &[String]) -> Link<'_> {
        if self.unlinked.contains(uid) {
            return Link::Unlinked;
        }
        match self.by_uid.get(uid) {
            Some(Decided::One(h, by)) => return Link::Human { id: &self.humans[*h].id, by: *by },
            Some(Decided::Shared(hs)) => return Link::Shared(hs.iter().map(|h| self.humans[*h].id.as_str()).collect()),
            Some(Decided::Ambiguous) => return Link::Ambiguous,
            None => {}
        }
        if let Some(h) = self.bare_directory_id(uid) {
            return Link::Human { id: &self.humans[h].id, by: LinkBy::Directory };
        }
        let emails: Vec<String> =
            emails.iter().filter_map(|e| canonical_email(e)).filter(|e| !self.unlinked_emails.contains(e)).collect();
        match resolve_emails(&self.by_email, &emails) {
            Resolved::One(h) => Link::Human { id: &self.humans[h].id, by: LinkBy::Email },
            Resolved::Ambiguous => Link::Ambiguous,
            Resolved::None => Link::None,
        }
    }

    /// `okta:okta/users/{id}` (an event read without the org) or `workspace:workspace/users/{id}`:
    /// user ids are unique across orgs and customers, so the bare id finds the person.
    fn bare_directory_id(&self, uid: &str) -> Option<usize> {
        let (source, rest) = if let Some(r) = uid.strip_prefix("okta:") {
            (DirectorySource::Okta, r)
        } else if let Some(r) = uid.strip_prefix("workspace:") {
            (DirectorySource::Workspace, r)
        } else {
            return None;
        };
        let (_, id) = rest.split_once("/users/")?;
        self.by_bare_id.get(&(source, id.to_string())).copied()
    }

    /// The humans an identity belongs to: one, or every human an Identity Center role is assigned to.
    pub fn humans_of_identity(&self, uid: &str) -> Vec<&str> {
        match self.link_of_identity(uid, &[]) {
            Link::Human { id, .. } => vec![id],
            Link::Shared(ids) => ids,
            _ => Vec::new(),
        }
    }

    /// The human behind one session of a role: the mapping (a role it links or unlinks decides
    /// every session), `onBehalfOf.userId` (an Identity Center `UserId`), then the session name as an
    /// Identity Center `UserName` (among the role's assignees first, when there are several stores)
    /// or as an address. `None` when nothing, or several humans, fit.
    pub fn human_of_session(
        &self,
        role_uid: &str,
        session_name: Option<&str>,
        on_behalf_of: Option<&str>,
    ) -> Option<&str> {
        if self.unlinked.contains(role_uid) {
            return None;
        }
        if let Some(Decided::One(h, LinkBy::Mapping)) = self.by_uid.get(role_uid) {
            return Some(&self.humans[*h].id);
        }
        if let Some(&h) = on_behalf_of.and_then(|u| self.by_idc_user_id.get(u)) {
            return Some(&self.humans[h].id);
        }
        let session = session_name.map(str::trim).filter(|s| !s.is_empty())?;
        if let Some(hs) = self.by_idc_user_name.get(&session.to_ascii_lowercase()) {
            let assignees: Vec<usize> = match self.by_uid.get(role_uid) {
                Some(Decided::One(h, _)) => vec![*h],
                Some(Decided::Shared(v)) => v.clone(),
                _ => Vec::new(),
            };
            let preferred: Vec<usize> = hs.iter().copied().filter(|h| assignees.contains(h)).collect();
            let pick = if preferred.is_empty() { hs.as_slice() } else { preferred.as_slice() };
            if let [h] = pick {
                return Some(&self.humans[*h].id);
            }
            if !pick.is_empty() {
                return None;
            }
        }
        let email = canonical_email(session).filter(|e| !self.unlinked_emails.contains(e))?;
        self.by_email.get(&email).copied().flatten().map(|h| self.humans[h].id.as_str())
    }

    /// Whether `role_uid` is an Identity Center role (by its name), whose sessions are people.
    pub fn is_sso_role(role_uid: &str) -> bool {
        parse_sso_role(role_uid).is_some()
            || parse_sso_role_name(role_uid.rsplit('/').next().unwrap_or(role_uid)).is_some()
    }
}

// ---------------------------------------------------------------------------------------------
// Findings
// ---------------------------------------------------------------------------------------------

/// The PCI formula (`docs/pci.md`) over the union of several identities: `U` and `T` are the sums
/// of their unused and granted risk. The same grant in two accounts is two grants, so summing is
/// the union.
pub fn human_pci(parts: &[Pci]) -> Pci {
    let unused: f64 = parts.iter().map(|p| p.unused_risk.max(0.0)).sum();
    let total: f64 = parts.iter().map(|p| p.granted_risk.max(0.0)).sum();
    // The formula of `pci::score`, on the sums.
    let value = if total > 0.0 { 100.0 * (unused / total) * (1.0 - (-unused / SATURATION).exp()) } else { 0.0 };
    let score = value.round().clamp(0.0, 100.0) as u8;
    Pci {
        score,
        band: PciBand::of(score),
        version: PCI_VERSION.to_string(),
        unused_risk: (unused * 100.0).round() / 100.0,
        granted_risk: (total * 100.0).round() / 100.0,
    }
}

/// What a human finding needs of one identity finding.
#[derive(Debug, Clone)]
struct Part {
    identity: HumanIdentity,
    pci: Pci,
    inactive: bool,
    super_identity: bool,
}

/// Folds identity findings (as they are written, one at a time) into human findings. Keeps a few
/// numbers per linked identity, not the findings.
pub struct HumanReport<'a> {
    linker: &'a HumanLinker,
    parts: BTreeMap<usize, Vec<Part>>,
    index: HashMap<&'a str, usize>,
}

impl<'a> HumanReport<'a> {
    pub fn new(linker: &'a HumanLinker) -> Self {
        let index = linker.humans.iter().enumerate().map(|(i, h)| (h.id.as_str(), i)).collect();
        HumanReport { linker, parts: BTreeMap::new(), index }
    }

    /// Adds one identity finding, to its human, or to each human of a shared Identity Center role.
    pub fn add(&mut self, f: &IdentityFinding) {
        let (ids, linked_by, shared) = match self.linker.link_of_identity(&f.arn, &[]) {
            Link::Human { id, by } => (vec![id], by, false),
            Link::Shared(ids) => (ids, LinkBy::IdentityCenter, true),
            // Linked by the caller with addresses the linker was not given at build: by email.
            Link::None => match f.human.as_deref().and_then(|h| self.index.get(h)) {
                Some(&h) => (vec![self.linker.humans[h].id.as_str()], LinkBy::Email, false),
                None => return,
            },
            Link::Unlinked | Link::Ambiguous => return,
        };
        let counts = f.action_counts;
        let granted = counts.map_or(f.granted_actions.len(), |c| c.granted);
        let used = counts.map_or(f.used_actions.len(), |c| c.used);
        let inactive = f.status.contains(&StatusFlag::Inactive);
        for id in ids {
            let Some(&h) = self.index.get(id) else { continue };
            // A shared role counts for this human as used only if one of their sessions was seen on
            // it; otherwise all of its grants are theirs, unused.
            let seen = !shared || self.session_seen(h, &f.session_names);
            let mut pci = f.pci.clone();
            if !seen {
                pci.unused_risk = pci.granted_risk;
            }
            self.parts.entry(h).or_default().push(Part {
                identity: HumanIdentity {
                    uid: f.arn.clone(),
                    cloud: f.cloud,
                    account: f.account.clone(),
                    kind: f.kind,
                    pci: if seen { f.pci.score } else { human_pci(std::slice::from_ref(&pci)).score },
                    granted,
                    used: if seen { used } else { 0 },
                    unused_high_risk: f.unused_high_risk,
                    last_activity: if seen { f.last_activity } else { None },
                    linked_by,
                    shared,
                },
                pci,
                inactive: inactive || !seen,
                super_identity: f.status.contains(&StatusFlag::SuperIdentity),
            });
        }
    }

    /// Whether a session name of human `h` (Identity Center `UserName`, or an address) is among
    /// `names`.
    fn session_seen(&self, h: usize, names: &[String]) -> bool {
        let human = &self.linker.humans[h];
        names.iter().any(|n| {
            human
                .accounts
                .iter()
                .any(|a| a.source == DirectorySource::IdentityCenter && a.login.eq_ignore_ascii_case(n))
                || canonical_email(n).is_some_and(|e| human.emails.binary_search(&e).is_ok())
        })
    }

    /// One finding per human, in the linker's order.
    pub fn finish(mut self) -> Vec<HumanFinding> {
        let linker = self.linker;
        linker.humans.iter().enumerate().map(|(i, h)| finding(h, self.parts.remove(&i).unwrap_or_default())).collect()
    }
}

/// Human findings of a set of identity findings; see [`HumanReport`].
pub fn human_findings(linker: &HumanLinker, identities: &[IdentityFinding]) -> Vec<HumanFinding> {
    let mut r = HumanReport::new(linker);
    identities.iter().for_each(|f| r.add(f));
    r.finish()
}

fn finding(h: &Human, mut parts: Vec<Part>) -> HumanFinding {
    parts.sort_by(|a, b| a.identity.uid.cmp(&b.identity.uid));
    let pcis: Vec<Pci> = parts.iter().map(|p| p.pci.clone()).collect();
    let pci = human_pci(&pcis);
    let granted_total: usize = parts.iter().map(|p| p.identity.granted).sum();
    let used_total: usize = parts.iter().map(|p| p.identity.used).sum();

    let mut flags = Vec::new();
    let mut recommendations = Vec::new();
    let enabled: Vec<&DirectoryAccount> = h.accounts.iter().filter(|a| !a.disabled).collect();
    if !h.accounts.is_empty() && enabled.is_empty() && granted_total > 0 {
        flags.push(HumanFlag::DisabledInDirectoryWithAccess);
        recommendations.push(format!(
            "Every directory account of {} is disabled, yet {} identities still hold {} grants: remove them.",
            h.id,
            parts.iter().filter(|p| p.identity.granted > 0).count(),
            granted_total
        ));
    }
    if !parts.is_empty() && parts.iter().all(|p| p.inactive) {
        flags.push(HumanFlag::InactiveEverywhere);
        recommendations.push(format!(
            "No activity by {} in the lookback on any of their {} identities: remove their access, or confirm it is needed.",
            h.id,
            parts.len()
        ));
    }
    let no_mfa: Vec<String> =
        enabled.iter().filter(|a| a.mfa == Some(false)).map(|a| source_name(a.source).to_string()).collect();
    if !no_mfa.is_empty() {
        flags.push(HumanFlag::MfaDisabled);
        recommendations.push(format!("Enroll a second factor for {} in {}.", h.id, no_mfa.join(", ")));
    }
    let supers: Vec<&str> = parts.iter().filter(|p| p.super_identity).map(|p| p.identity.uid.as_str()).collect();
    if !supers.is_empty() {
        flags.push(HumanFlag::SuperSomewhere);
        recommendations.push(format!(
            "{} is a super identity through {}: keep standing administrator access to break-glass use.",
            h.id,
            supers.join(", ")
        ));
    }
    if pci.band != PciBand::Low
        && let Some(worst) = parts.iter().filter(|p| p.pci.unused_risk > 0.0).max_by(|a, b| {
            a.pci.unused_risk.total_cmp(&b.pci.unused_risk).then_with(|| b.identity.uid.cmp(&a.identity.uid))
        })
    {
        recommendations.push(format!(
            "PCI {} over {} identities: right-size {} first (most unused risk).",
            pci.score,
            parts.len(),
            worst.identity.uid
        ));
    }
    HumanFinding {
        id: h.id.clone(),
        display_name: h.display_name.clone(),
        identities: parts.into_iter().map(|p| p.identity).collect(),
        directories: h.accounts.clone(),
        granted_total,
        used_total,
        pci,
        flags,
        recommendations,
    }
}

fn source_name(s: DirectorySource) -> &'static str {
    match s {
        DirectorySource::Okta => "Okta",
        DirectorySource::Workspace => "Google Workspace",
        DirectorySource::IdentityCenter => "IAM Identity Center",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::idp::identity_center::tests::{ADMIN_FULL_ROLE, ADMIN_ROLE, BOB as IDC_BOB, RO_ROLE};
    use crate::idp::okta::OktaExport;
    use grantwatch_types::{Cloud, EventTime, IdentityKind};

    const MAPPING: &[u8] = include_bytes!("idp/testdata/humans/mapping.json");
    const OKTA_ALICE: &str = "okta:acme.okta.com/users/00u1alice0000000000a";
    const AZURE_ALICE: &str = "azure:/subscriptions/sub-1/principals/0b1c2d3e-alice";
    const GCP_ADOE: &str = "gcp:projects/p1/user:adoe@example.com";
    const IAM_CAROL: &str = "arn:aws:iam::111122223333:user/carol";
    const IAM_ALICE_OLD: &str = "arn:aws:iam::111122223333:user/alice-old";
    const IAM_BOB_SHARED: &str = "arn:aws:iam::111122223333:user/bob-shared";
    const IAM_SHARED: &str = "arn:aws:iam::111122223333:user/shared";
    const IAM_TWO: &str = "arn:aws:iam::111122223333:user/two";
    const GCP_ZED: &str = "gcp:projects/p1/user:zed@contractor.io";
    const AZURE_ZED: &str = "azure:/subscriptions/sub-2/principals/9f8e-zed";
    const AZURE_TEAM: &str = "azure:/subscriptions/sub-1/principals/team";
    const OKTA_SAML_ROLE: &str = "arn:aws:iam::111122223333:role/Okta-Admin";

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    fn linker() -> HumanLinker {
        HumanLinker::builder()
            .okta(crate::idp::okta::tests::directory())
            .workspace(crate::idp::workspace::tests::directory())
            .identity_center(crate::idp::identity_center::tests::directory())
            .sso_roles(crate::idp::identity_center::tests::roles())
            // Entra UPN, a GCP member by a Workspace alias, IAM users with an `email` tag.
            .identity(AZURE_ALICE, &s(&["Alice@Example.com"]))
            .identity(GCP_ADOE, &s(&["adoe@example.com"]))
            .identity(IAM_CAROL, &s(&["carol@example.com"]))
            .identity(IAM_ALICE_OLD, &s(&["alice@example.com"]))
            .identity(IAM_BOB_SHARED, &s(&["bob@example.com"]))
            .identity(IAM_SHARED, &s(&["shared@example.com"]))
            .identity(IAM_TWO, &s(&["alice@example.com", "bob@example.com"]))
            .identity(GCP_ZED, &s(&["zed@contractor.io"]))
            .identity(AZURE_ZED, &s(&["ZED@contractor.io"]))
            .identity(AZURE_TEAM, &s(&["team@example.com"]))
            .mapping(Mapping::parse(MAPPING).unwrap())
            .build()
    }

    #[test]
    fn people_join_across_directories_by_email() {
        let l = linker();
        let ids: Vec<&str> = l.humans().map(|h| h.id.as_str()).collect();
        let mut sorted = ids.clone();
        sorted.sort_unstable();
        assert_eq!(
            sorted,
            [
                "alice@example.com",
                "bob@example.com",
                "carol@example.com",
                "dave@example.com",
                "erin@example.com",
                "frank@example.com",
                "grace@example.com",
                "henry@example.com",
                "ivan@contractor.io",
                "zed@contractor.io",
            ],
            "the SCIM service user is unlinked by the mapping, so no human"
        );
        let alice = l.human("alice@example.com").unwrap();
        assert_eq!(alice.display_name.as_deref(), Some("Alice Doe"));
        assert_eq!(alice.sources, [DirectorySource::Okta, DirectorySource::Workspace, DirectorySource::IdentityCenter]);
        assert_eq!(alice.accounts.len(), 3);
        assert_eq!(alice.accounts[0].mfa, Some(true));
        assert!(
            alice.emails.contains(&"alice.doe@gmail.com".to_string())
                && alice.emails.contains(&"adoe@example.com".to_string())
        );
        // Identity Center's "bob" (UserName not an address) joins by his email, spelled in capitals there.
        let bob = l.human("bob@example.com").unwrap();
        assert_eq!(bob.sources, [DirectorySource::Okta, DirectorySource::Workspace, DirectorySource::IdentityCenter]);
        assert_eq!(bob.accounts.iter().map(|a| a.mfa).collect::<Vec<_>>(), [Some(false), Some(false), None]);
        assert!(l.human("carol@example.com").unwrap().accounts[0].disabled);
    }

    #[test]
    fn cloud_identities_link_by_email_mapping_and_directory() {
        let l = linker();
        assert_eq!(l.human_of_identity(AZURE_ALICE, &[]), Some("alice@example.com"));
        assert_eq!(l.link_of_identity(GCP_ADOE, &[]), Link::Human { id: "alice@example.com", by: LinkBy::Email });
        assert_eq!(l.human_of_identity(IAM_CAROL, &[]), Some("carol@example.com"));
        // Not registered at build: the addresses given now decide, aliases included.
        assert_eq!(
            l.human_of_identity("arn:aws:iam::444455556666:user/x", &s(&["ALICE.DOE@gmail.com"])),
            Some("alice@example.com")
        );
        assert_eq!(l.human_of_identity("arn:aws:iam::444455556666:user/y", &s(&["nobody@example.com"])), None);
        // Directory accounts are their people; an Okta uid read without the org still finds its user.
        assert_eq!(l.link_of_identity(OKTA_ALICE, &[]), Link::Human { id: "alice@example.com", by: LinkBy::Directory });
        assert_eq!(l.human_of_identity("okta:okta/users/00u1alice0000000000a", &[]), Some("alice@example.com"));
        assert_eq!(
            l.human_of_identity("workspace:C03az79cb/users/104857600000000000002", &[]),
            Some("bob@example.com")
        );
        // Addresses no directory knows still meet: Zed's GCP and Azure users are one human.
        assert_eq!(l.human_of_identity(GCP_ZED, &[]), Some("zed@contractor.io"));
        assert_eq!(l.human_of_identity(AZURE_ZED, &[]), Some("zed@contractor.io"));
        let zed = l.human("zed@contractor.io").unwrap();
        assert_eq!(zed.identities, [(AZURE_ZED.to_string(), LinkBy::Email), (GCP_ZED.to_string(), LinkBy::Email)]);
        assert!(zed.sources.is_empty());
    }

    #[test]
    fn the_mapping_wins_links_and_unlinks() {
        let l = linker();
        // Tagged alice@, but unlinked by the mapping.
        assert_eq!(l.link_of_identity(IAM_ALICE_OLD, &s(&["alice@example.com"])), Link::Unlinked);
        // Tagged bob@, but the mapping says Frank.
        assert_eq!(
            l.link_of_identity(IAM_BOB_SHARED, &[]),
            Link::Human { id: "frank@example.com", by: LinkBy::Mapping }
        );
        let frank = l.human("frank@example.com").unwrap();
        assert_eq!(frank.display_name.as_deref(), Some("Frank Admin"));
        assert_eq!(frank.identities.len(), 3);
        assert!(frank.sources.is_empty());
        // An unlinked address links nothing.
        assert_eq!(l.human_of_identity(AZURE_TEAM, &[]), None);
        assert_eq!(l.human_of_identity("x", &s(&["team@example.com"])), None);
        // An unlinked directory account is no one's.
        assert_eq!(l.link_of_identity("okta:acme.okta.com/users/00u6svcscim0000000f", &[]), Link::Unlinked);

        // A mapping that names a directory account renames its human, and its addresses follow.
        let m = Mapping::parse(
            br#"{"humans":[{"id":"Dave-The-Human","identities":["okta:acme.okta.com/users/00u4dave0000000000d"],
            "emails":["shared@example.com"]}]}"#,
        )
        .unwrap();
        let l = HumanLinker::builder()
            .okta(crate::idp::okta::tests::directory())
            .workspace(crate::idp::workspace::tests::directory())
            .mapping(m)
            .build();
        assert_eq!(l.human_of_identity("okta:acme.okta.com/users/00u4dave0000000000d", &[]), Some("Dave-The-Human"));
        assert_eq!(l.human_of_identity("arn:aws:iam::1:user/d", &s(&["dave@example.com"])), Some("Dave-The-Human"));
        // The directories disagree about shared@ (Dave, Erin, Henry claim it); the mapping decides.
        assert_eq!(l.human_of_identity("arn:aws:iam::1:user/s", &s(&["shared@example.com"])), Some("Dave-The-Human"));
        assert_eq!(l.human_of_identity("arn:aws:iam::1:user/e", &s(&["erin@example.com"])), Some("erin@example.com"));
    }

    #[test]
    fn ambiguous_addresses_link_nothing_and_warn() {
        let l = linker();
        // shared@ is Dave's and Erin's secondEmail (one Okta org) and Henry's Workspace alias.
        assert_eq!(l.link_of_identity(IAM_SHARED, &[]), Link::Ambiguous);
        assert_eq!(l.human_of_identity("x", &s(&["shared@example.com"])), None);
        for h in ["dave@example.com", "erin@example.com", "henry@example.com"] {
            let human = l.human(h).unwrap();
            assert_eq!(human.accounts.len(), 1, "{h} stays alone");
            assert!(!human.emails.contains(&"shared@example.com".to_string()));
        }
        assert!(l.warnings().iter().any(|w| w.starts_with("shared@example.com: ")), "{:?}", l.warnings());
        // Two addresses of two humans on one identity.
        assert_eq!(l.link_of_identity(IAM_TWO, &[]), Link::Ambiguous);
        assert!(l.warnings().iter().any(|w| w.starts_with(IAM_TWO)));

        // Across directories: Okta's O claims x@ (primary) and y@ (secondary); Workspace has x@ and
        // y@ as two people. O joins x@'s person; y@ would merge two Workspace people: refused.
        let mut okta = OktaDirectory::with_org("o.okta.com");
        okta.add(OktaExport::Users(vec![crate::idp::okta::OktaUser {
            id: "00uO".into(),
            org: None,
            status: Some("ACTIVE".into()),
            created: None,
            last_login: None,
            login: Some("x@example.com".into()),
            email: None,
            second_email: Some("y@example.com".into()),
            first_name: None,
            last_name: None,
        }]));
        let mut ws = WorkspaceDirectory::new();
        ws.add_bytes(
            br#"{"users":[{"id":"1","primaryEmail":"x@example.com","customerId":"C1"},
                                    {"id":"2","primaryEmail":"y@example.com","customerId":"C1"}]}"#,
        )
        .unwrap();
        let l = HumanLinker::builder().okta(okta).workspace(ws).build();
        assert_eq!(l.human("x@example.com").unwrap().sources, [DirectorySource::Okta, DirectorySource::Workspace]);
        assert_eq!(l.human("y@example.com").unwrap().sources, [DirectorySource::Workspace]);
        assert_eq!(l.human_of_identity("a", &s(&["y@example.com"])), None);
        assert_eq!(l.human_of_identity("workspace:C1/users/2", &[]), Some("y@example.com"));
    }

    #[test]
    fn identity_center_roles_and_sessions() {
        let l = linker();
        // The admin permission set reaches Alice and Bob through their group: one role, shared.
        assert_eq!(l.link_of_identity(ADMIN_ROLE, &[]), Link::Shared(vec!["alice@example.com", "bob@example.com"]));
        assert_eq!(l.human_of_identity(ADMIN_ROLE, &[]), None);
        assert_eq!(l.humans_of_identity(RO_ROLE), ["alice@example.com", "ivan@contractor.io"]);
        assert_eq!(l.link_of_identity(ADMIN_FULL_ROLE, &[]), Link::None, "a permission set nobody is assigned");
        assert!(HumanLinker::is_sso_role(ADMIN_ROLE) && !HumanLinker::is_sso_role(OKTA_SAML_ROLE));

        assert_eq!(l.human_of_session(ADMIN_ROLE, Some("alice@example.com"), None), Some("alice@example.com"));
        assert_eq!(l.human_of_session(ADMIN_ROLE, Some("BOB"), None), Some("bob@example.com"), "IdC UserName");
        assert_eq!(l.human_of_session(ADMIN_ROLE, None, Some(IDC_BOB)), Some("bob@example.com"), "onBehalfOf.userId");
        assert_eq!(l.human_of_session(RO_ROLE, Some("ivan"), None), Some("ivan@contractor.io"));
        assert_eq!(l.human_of_session(ADMIN_ROLE, Some("mallory"), None), None);
        assert_eq!(l.human_of_session(ADMIN_ROLE, None, None), None);
        // Okta's AWS app federates with the login as session name.
        assert_eq!(l.human_of_session(OKTA_SAML_ROLE, Some("Alice@Example.com"), None), Some("alice@example.com"));
        assert_eq!(l.human_of_session(OKTA_SAML_ROLE, Some("shared@example.com"), None), None, "ambiguous");

        // The mapping decides every session of a role it names or unlinks.
        let m = Mapping::parse(
            format!(r#"{{"humans":[{{"id":"breakglass-owner","identities":["{RO_ROLE}"]}}],"unlink":[{{"identity":"{ADMIN_ROLE}"}}]}}"#)
                .as_bytes(),
        )
        .unwrap();
        let l = HumanLinker::builder()
            .identity_center(crate::idp::identity_center::tests::directory())
            .sso_roles(crate::idp::identity_center::tests::roles())
            .mapping(m)
            .build();
        assert_eq!(l.human_of_session(ADMIN_ROLE, Some("alice@example.com"), Some(IDC_BOB)), None);
        assert_eq!(l.human_of_session(RO_ROLE, Some("ivan"), None), Some("breakglass-owner"));
    }

    #[test]
    fn events_are_stamped_with_the_identitys_human_or_the_sessions() {
        let l = std::sync::Arc::new(linker());
        let linked = [(AZURE_ALICE.to_string(), "alice@example.com".to_string())];
        let index = HumanIndex::new(l, linked);
        let actor = |uid: &str, kind: IdentityKind, session: Option<&str>| grantwatch_types::Actor {
            uid: uid.into(),
            kind,
            name: None,
            account_uid: None,
            session_name: session.map(str::to_string),
            principal_id: None,
            access_key_id: None,
            invoked_by: None,
            mfa_authenticated: None,
            on_behalf_of: None,
            human: None,
        };
        assert_eq!(index.human_of(&actor(AZURE_ALICE, IdentityKind::User, None)), Some("alice@example.com"));
        // A shared Identity Center role: the session says who.
        assert_eq!(index.human_of(&actor(ADMIN_ROLE, IdentityKind::Role, Some("BOB"))), Some("bob@example.com"));
        assert_eq!(index.human_of(&actor(ADMIN_ROLE, IdentityKind::Role, Some("mallory"))), None);
        assert_eq!(index.human_of(&actor(ADMIN_ROLE, IdentityKind::Role, None)), None, "shared, no session");
        // A directory account, by its id.
        assert_eq!(index.human_of(&actor(OKTA_ALICE, IdentityKind::User, None)), Some("alice@example.com"));
        assert_eq!(index.human_of(&actor("arn:aws:iam::111122223333:user/nobody", IdentityKind::User, None)), None);
    }

    #[test]
    fn mapping_files_that_contradict_themselves_are_refused() {
        let err = |j: &str| Mapping::parse(j.as_bytes()).unwrap_err().to_string();
        assert_eq!(
            err(r#"{"humans":[{"id":"a@x.io","identities":["i1"]},{"id":"b@x.io","identities":["i1"]}]}"#),
            "humans[1]: i1 is also claimed by humans[0]"
        );
        assert_eq!(err(r#"{"humans":[{"id":"a@x.io"},{"id":"A@X.io"}]}"#), "humans[1]: id \"a@x.io\" is used twice");
        assert_eq!(
            err(r#"{"humans":[{"id":"a","identities":["i1"]}],"unlink":[{"identity":"i1"}]}"#),
            "humans[0]: i1 is also unlinked"
        );
        assert_eq!(
            err(r#"{"unlink":[{"identity":"i1","email":"a@x.io"}]}"#),
            "unlink[0]: give exactly one of identity or email"
        );
        assert!(err(r#"{"human":[]}"#).contains("unknown field `human`"));
        assert!(err(r#"{"humans":[{"id":"a","identity":["i"]}]}"#).contains("unknown field `identity`"));
        assert_eq!(err(r#"{"humans":[{"id":"a","emails":["nope"]}]}"#), "humans[0]: \"nope\" is not an address");
        assert_eq!(err(r#"{"humans":[{"id":" "}]}"#), "humans[0]: empty id");
        let m = Mapping::parse(MAPPING).unwrap();
        assert_eq!(m.humans[0].id, "frank@example.com");
        assert_eq!(m.humans[0].emails, ["frank@example.com"]);
        assert_eq!(m.unlink_emails.iter().collect::<Vec<_>>(), ["team@example.com"]);
    }

    // ------------------------------------------------------------------ findings

    fn pci(unused: f64, granted: f64) -> Pci {
        human_pci(&[Pci {
            score: 0,
            band: PciBand::Low,
            version: PCI_VERSION.into(),
            unused_risk: unused,
            granted_risk: granted,
        }])
    }

    // A fixture builder: one argument per field the tests vary.
    #[allow(clippy::too_many_arguments)]
    fn finding(
        arn: &str,
        cloud: Cloud,
        kind: IdentityKind,
        granted: usize,
        used: usize,
        pci: Pci,
        status: &[StatusFlag],
        sessions: &[&str],
    ) -> IdentityFinding {
        let actions = |n: usize| (0..n).map(|i| format!("svc:A{i}")).collect::<Vec<_>>();
        IdentityFinding {
            arn: arn.to_string(),
            account: "acct".to_string(),
            cloud,
            kind,
            name: arn.rsplit('/').next().unwrap_or(arn).to_string(),
            granted_actions: actions(granted),
            conditional_actions: Vec::new(),
            used_actions: actions(used),
            unused_actions: actions(granted - used),
            used_not_granted: Vec::new(),
            unused_high_risk: granted - used,
            pci,
            status: status.to_vec(),
            last_activity: (used > 0).then(|| EventTime::parse_rfc3339("2024-05-20T00:00:00Z").unwrap()),
            events_in_lookback: used as u64,
            active_days: u32::from(used > 0),
            unused_access_keys: Vec::new(),
            session_names: s(sessions),
            recommendations: Vec::new(),
            actions_form: Default::default(),
            action_counts: None,
            escalation: None,
            human: None,
        }
    }

    #[test]
    fn human_pci_is_the_formula_over_the_union() {
        use crate::catalog::{AccessLevel, Catalog, RiskTags};
        use crate::pci::{PciInput, score};
        let e = |n: &str, l| ("svc".to_string(), n.to_string(), l, vec!["*".to_string()], RiskTags::default());
        let c = Catalog::from_entries([
            e("Read1", AccessLevel::Read),
            e("Write1", AccessLevel::Write),
            e("Write2", AccessLevel::Write),
            e("Perm1", AccessLevel::PermissionsManagement),
        ]);
        let set = |names: &[&str]| {
            let mut s = c.empty_set();
            names.iter().for_each(|n| s.insert(c.lookup(&format!("svc:{n}")).unwrap()));
            s
        };
        let none = c.empty_set();
        let one = |g: &crate::catalog::ActionSet, u: &crate::catalog::ActionSet| {
            score(&c, &PciInput { granted: g, unscoped: g, conditional: &none, used: u, reachable: &none })
        };
        // Two identities with disjoint grants: the human is one identity holding both.
        let (ga, ua) = (set(&["Read1", "Write1"]), set(&["Read1"]));
        let (gb, ub) = (set(&["Write2", "Perm1"]), set(&[]));
        let (gu, uu) = (set(&["Read1", "Write1", "Write2", "Perm1"]), set(&["Read1"]));
        let parts = [one(&ga, &ua), one(&gb, &ub)];
        assert_eq!(human_pci(&parts), one(&gu, &uu));
        assert!(human_pci(&parts).score > parts[0].score);
        assert_eq!(human_pci(&[]).score, 0);
        assert_eq!(human_pci(&[one(&ga, &ua)]), one(&ga, &ua));
    }

    #[test]
    fn human_findings_sum_identities_and_flag() {
        let l = linker();
        let super_flags = [StatusFlag::SuperIdentity];
        let findings = [
            finding(AZURE_ALICE, Cloud::Azure, IdentityKind::User, 10, 4, pci(3.0, 6.0), &[], &[]),
            finding(GCP_ADOE, Cloud::Gcp, IdentityKind::User, 5, 0, pci(2.0, 2.0), &[StatusFlag::Inactive], &[]),
            // The shared admin role: Alice's session was seen on it, Bob's never.
            finding(
                ADMIN_ROLE,
                Cloud::Aws,
                IdentityKind::Role,
                100,
                20,
                pci(50.0, 80.0),
                &super_flags,
                &["alice@example.com"],
            ),
            finding(IAM_CAROL, Cloud::Aws, IdentityKind::User, 7, 0, pci(4.0, 4.0), &[StatusFlag::Inactive], &[]),
            finding("arn:aws:iam::1:role/unrelated", Cloud::Aws, IdentityKind::Role, 3, 3, pci(0.0, 1.0), &[], &[]),
            // Linked by the caller (addresses the linker was not given): taken as an email link.
            IdentityFinding {
                human: Some("dave@example.com".into()),
                ..finding(
                    "gcp:projects/p2/user:dmoe@example.net",
                    Cloud::Gcp,
                    IdentityKind::User,
                    2,
                    1,
                    pci(0.3, 0.6),
                    &[],
                    &[],
                )
            },
        ];
        let humans = human_findings(&l, &findings);
        assert_eq!(humans.len(), l.humans().count(), "every human, with or without identities");
        let by = |id: &str| humans.iter().find(|h| h.id == id).unwrap();

        let alice = by("alice@example.com");
        let uids: Vec<&str> = alice.identities.iter().map(|i| i.uid.as_str()).collect();
        assert_eq!(uids, [ADMIN_ROLE, AZURE_ALICE, GCP_ADOE]);
        assert_eq!((alice.granted_total, alice.used_total), (115, 24));
        assert_eq!((alice.pci.unused_risk, alice.pci.granted_risk), (55.0, 88.0));
        assert_eq!(alice.pci, pci(55.0, 88.0));
        assert!(alice.identities[0].shared && alice.identities[0].linked_by == LinkBy::IdentityCenter);
        assert_eq!(alice.identities[1].linked_by, LinkBy::Email);
        assert_eq!(alice.flags, [HumanFlag::SuperSomewhere]);
        assert_eq!(alice.directories.len(), 3);
        assert!(alice.recommendations.iter().any(|r| r.contains(&format!("right-size {ADMIN_ROLE} first"))));

        // Bob holds the admin role but never used it: all of it is his unused risk, and he is
        // inactive everywhere; no second factor in Okta nor Workspace.
        let bob = by("bob@example.com");
        assert_eq!((bob.granted_total, bob.used_total), (100, 0));
        assert_eq!(bob.pci, pci(80.0, 80.0));
        assert_eq!(bob.identities[0].pci, bob.pci.score);
        assert_eq!(bob.identities[0].last_activity, None);
        assert_eq!(bob.flags, [HumanFlag::InactiveEverywhere, HumanFlag::MfaDisabled, HumanFlag::SuperSomewhere]);
        assert!(
            bob.recommendations
                .iter()
                .any(|r| r == "Enroll a second factor for bob@example.com in Okta, Google Workspace.")
        );

        // Carol left (Okta DEPROVISIONED) and still holds an IAM user.
        let carol = by("carol@example.com");
        assert_eq!(carol.flags, [HumanFlag::DisabledInDirectoryWithAccess, HumanFlag::InactiveEverywhere]);
        assert!(carol.recommendations[0].starts_with("Every directory account of carol@example.com is disabled"));

        // A human without identities: directory data only, PCI 0, no flags from usage.
        let erin = by("erin@example.com");
        assert!(erin.identities.is_empty());
        assert_eq!((erin.pci.score, erin.granted_total), (0, 0));
        assert!(erin.flags.is_empty());
        let dave = by("dave@example.com");
        assert_eq!(dave.identities[0].linked_by, LinkBy::Email);
        assert_eq!((dave.granted_total, dave.used_total), (2, 1));

        // The report's contract.
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../schemas/humans.v1.json");
        let schema: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let validator = jsonschema::validator_for(&schema).unwrap();
        for h in &humans {
            let json = serde_json::to_value(h).unwrap();
            let errors: Vec<String> =
                validator.iter_errors(&json).map(|e| format!("{e} at {}", e.instance_path)).collect();
            assert!(errors.is_empty(), "{}: {errors:?}", h.id);
        }
    }
}
