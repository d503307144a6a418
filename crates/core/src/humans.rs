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
    DirectoryAccount, DirectorySource, EventTime, HumanFinding, HumanFlag, HumanIdentity, IdentityFinding, LinkBy,
    Pci, PciBand, StatusFlag,
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
    Human { id: &'a str, by: LinkBy },
    /// Identity Center roles assigned to several humans: each of them may act as it.
    Shared(Vec<&'a str>),
    /// The mapping file says: not linked.
    Unlinked,
    /// Its addresses point at several humans, or at an address two people claim.
    Ambiguous,
    None,
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
                    u.identity_store_id.clone().unwrap_or_else(|| crate::idp::identity_center::DEFAULT_STORE.to_string()),
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
    let mut humans: Vec<Human> = Vec::with_capacity(members.len());
    let mut taken_ids: BTreeSet<String> = BTreeSet::new();
    for nodes in &members {
        let mapped = nodes.iter().find_map(|&n| n.checked_sub(np)).map(|m| &b.mapping.humans[m]);
        let ps: Vec<&Person> = nodes.iter().filter_map(|&n| persons.get(n)).collect();
        let mut id = match mapped {
            Some(m) => m.id.clone(),
            None => {
                let mut candidates: Vec<(DirectorySource, &str)> = ps
                    .iter()
                    .flat_map(|p| p.emails.iter().filter(|(_, r)| *r == 1).map(|(e, _)| (p.tenant.0, e.as_str())))
                    .filter(|(_, e)| !ambiguous.contains(e) && !unlinked_emails.contains(*e))
                    .collect();
                candidates.sort();
                match candidates.first() {
                    Some((_, e)) => (*e).to_string(),
                    None => ps.iter().map(|p| p.uid.clone()).min().unwrap_or_default(),
                }
            }
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
        let display_name = mapped
            .and_then(|m| m.display_name.clone())
            .or_else(|| {
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
                warnings.push(format!("{uid}: its addresses point at several humans or at an ambiguous address; not linked"));
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
            by_uid.insert(i.clone(), Decided::One(hi, if person_of_uid.contains_key(i.as_str()) { LinkBy::Directory } else { LinkBy::Mapping }));
        }
    }
    for (uid, d) in &by_uid {
        match d {
            Decided::One(h, by) if *by != LinkBy::Directory => humans[*h].identities.push((uid.clone(), *by)),
            Decided::Shared(hs) => hs.iter().for_each(|h| humans[*h].identities.push((uid.clone(), LinkBy::IdentityCenter))),
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
        parse_sso_role(role_uid).is_some() || parse_sso_role_name(role_uid.rsplit('/').next().unwrap_or(role_uid)).is_some()
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
            _ => return,
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
            human.accounts.iter().any(|a| a.source == DirectorySource::IdentityCenter && a.login.eq_ignore_ascii_case(n))
                || canonical_email(n).is_some_and(|e| human.emails.binary_search(&e).is_ok())
        })
    }

    /// One finding per human, in the linker's order.
    pub fn finish(mut self) -> Vec<HumanFinding> {
        let linker = self.linker;
        linker
            .humans
            .iter()
            .enumerate()
            .map(|(i, h)| finding(h, self.parts.remove(&i).unwrap_or_default()))
            .collect()
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
    let no_mfa: Vec<String> = enabled.iter().filter(|a| a.mfa == Some(false)).map(|a| source_name(a.source).to_string()).collect();
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
        && let Some(worst) = parts
            .iter()
            .filter(|p| p.pci.unused_risk > 0.0)
            .max_by(|a, b| a.pci.unused_risk.total_cmp(&b.pci.unused_risk).then_with(|| b.identity.uid.cmp(&a.identity.uid)))
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

/// The latest directory sign-in of a human, if any directory says.
pub fn last_login(h: &Human) -> Option<EventTime> {
    h.accounts.iter().filter_map(|a| a.last_login).max()
}
