//! The multi-cloud world: the human population, the Azure tenant (management groups, subscriptions,
//! resource groups, resources, Entra principals, role assignments), the GCP organization (folders,
//! projects, buckets, service accounts, IAM bindings), and the *actors*: one per principal per
//! subscription or project, with the grants that reach it there and the calls it makes.

use std::collections::{BTreeMap, BTreeSet};

use rand::Rng;
use rand::seq::{IndexedRandom, SliceRandom};
use rand_chacha::ChaCha8Rng;

use super::MultiCloudSpec;
use super::ops::{AZ_OPS, AzTarget, GCP_CALLS, GTarget};
use super::roles::{AzurePermission, AzureRoles, GcpRoles, OpSet};
use crate::org::{Kind, Org};
use crate::util::{hex, push_alnum, uuid};
use crate::{LOOKBACK_DAYS, SynthError};

const FIRST: &[&str] = &[
    "alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy", "mallory", "niaj", "olivia",
    "peggy", "rupert", "sybil", "trent", "victor", "walter", "yusuf", "zoe", "maria", "chen", "priya", "lars", "amara",
    "ana", "ben", "chloe", "diego", "elif", "farah", "gunnar", "hana", "ines", "jonas", "kofi", "lena", "malik",
    "noor", "oscar", "pia", "quinn", "rosa", "sven", "tara", "uma", "vera", "wei", "ximena", "yara", "zain",
];
const LAST: &[&str] = &[
    "smith", "jones", "garcia", "miller", "davis", "lopez", "wilson", "anderson", "thomas", "moore", "martin", "lee",
    "walker", "hall", "young", "king", "wright", "scott", "green", "baker", "nguyen", "kim", "patel", "novak",
    "okafor", "silva", "schmidt", "rossi", "dubois", "tanaka", "kowalski", "jensen", "haddad", "mensah", "ivanova",
    "costa", "murphy", "fischer", "sato", "larsen", "ortiz", "yilmaz", "bauer", "santos", "berg", "cohen",
];
const WORDS: &[&str] = &[
    "orders",
    "payments",
    "billing",
    "users",
    "events",
    "audit",
    "search",
    "catalog",
    "inventory",
    "reports",
    "metrics",
    "ingest",
    "media",
    "profiles",
    "ledger",
    "analytics",
    "exports",
    "backups",
];
const ENVS: &[&str] = &["prod", "staging", "dev", "shared"];
/// The domain of every human's address.
pub(crate) const DOMAIN: &str = "example.com";

fn pick<'a, R: Rng>(rng: &mut R, xs: &'a [&'a str]) -> &'a str {
    xs[rng.random_range(0..xs.len())]
}

fn digits<R: Rng>(rng: &mut R, n: usize) -> String {
    let mut s = String::with_capacity(n);
    s.push(char::from(b'1' + rng.random_range(0..9u8)));
    for _ in 1..n {
        s.push(char::from(b'0' + rng.random_range(0..10u8)));
    }
    s
}

fn okta_id<R: Rng>(rng: &mut R, prefix: &str) -> String {
    let mut s = String::from(prefix);
    push_alnum(&mut s, rng, 17);
    s
}

/// Public IPv4 addresses (documentation ranges and a few plausible ones).
fn ips<R: Rng>(rng: &mut R, n: usize) -> Vec<String> {
    (0..n)
        .map(|_| match rng.random_range(0..3) {
            0 => format!("203.0.113.{}", rng.random_range(1..255)),
            1 => format!("198.51.100.{}", rng.random_range(1..255)),
            _ => format!(
                "{}.{}.{}.{}",
                rng.random_range(20..100),
                rng.random_range(0..255),
                rng.random_range(0..255),
                rng.random_range(1..255)
            ),
        })
        .collect()
}

// ------------------------------------------------------------------------------------------- humans

pub(crate) struct Human {
    pub(crate) first: String,
    pub(crate) last: String,
    /// The canonical address: lowercase `first.last@example.com`.
    pub(crate) email: String,
    /// Another spelling of the same address (capitalized), used by Okta's login, the Entra UPN and
    /// the IAM user's `email` tag: links must compare case-insensitively.
    pub(crate) alt: Option<String>,
    pub(crate) okta_id: String,
    /// Workspace user id; `None` for the few humans without a Google account.
    pub(crate) ws_id: Option<String>,
    pub(crate) ws_2sv: bool,
    pub(crate) idc_id: Option<String>,
    /// Index of the Entra user in [`Azure::principals`].
    pub(crate) entra: Option<u32>,
    pub(crate) gcp: bool,
    pub(crate) azure: bool,
    /// IAM users tagged with this human's address (ARNs).
    pub(crate) aws_users: Vec<String>,
    /// IAM Identity Center roles whose sessions carry this human's address (ARNs).
    pub(crate) sso_roles: Vec<String>,
    pub(crate) created: i64,
    pub(crate) ips: Vec<String>,
    pub(crate) okta_groups: Vec<u32>,
}

impl Human {
    /// The spelling the directories that keep the user's own capitalization use.
    pub(crate) fn spelled(&self) -> &str {
        self.alt.as_deref().unwrap_or(&self.email)
    }

    pub(crate) fn display(&self) -> String {
        format!("{} {}", cap(&self.first), cap(&self.last))
    }
}

pub(crate) fn cap(s: &str) -> String {
    let mut c = s.chars();
    c.next().map(|f| f.to_ascii_uppercase().to_string() + c.as_str()).unwrap_or_default()
}

pub(crate) struct OktaGroup {
    pub(crate) id: String,
    pub(crate) name: String,
    pub(crate) description: String,
    pub(crate) members: Vec<u32>,
}

// -------------------------------------------------------------------------------------------- azure

pub(crate) struct Mg {
    pub(crate) name: String,
    pub(crate) display: String,
    pub(crate) parent: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AzKind {
    Vm,
    Disk,
    Storage,
    Nsg,
    Vnet,
    Site,
    Aks,
}

impl AzKind {
    pub(crate) fn provider_path(self) -> &'static str {
        match self {
            AzKind::Vm => "Microsoft.Compute/virtualMachines",
            AzKind::Disk => "Microsoft.Compute/disks",
            AzKind::Storage => "Microsoft.Storage/storageAccounts",
            AzKind::Nsg => "Microsoft.Network/networkSecurityGroups",
            AzKind::Vnet => "Microsoft.Network/virtualNetworks",
            AzKind::Site => "Microsoft.Web/sites",
            AzKind::Aks => "Microsoft.ContainerService/managedClusters",
        }
    }
}

pub(crate) struct AzRes {
    pub(crate) rg: u16,
    pub(crate) kind: AzKind,
    pub(crate) name: String,
}

pub(crate) struct Sub {
    pub(crate) id: String,
    pub(crate) name: String,
    pub(crate) mg: u32,
    pub(crate) rgs: Vec<String>,
    pub(crate) res: Vec<AzRes>,
    pub(crate) location: &'static str,
}

impl Sub {
    pub(crate) fn rg_id(&self, rg: u16) -> String {
        format!("/subscriptions/{}/resourceGroups/{}", self.id, self.rgs[rg as usize])
    }

    pub(crate) fn res_id(&self, r: u32) -> String {
        let res = &self.res[r as usize];
        format!("{}/providers/{}/{}", self.rg_id(res.rg), res.kind.provider_path(), res.name)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PKind {
    User,
    Group,
    ServicePrincipal,
    ManagedIdentity,
}

pub(crate) struct Principal {
    pub(crate) oid: String,
    pub(crate) kind: PKind,
    pub(crate) display: String,
    pub(crate) upn: Option<String>,
    /// Application (client) id of service principals and managed identities.
    pub(crate) app_id: Option<String>,
    pub(crate) human: Option<u32>,
    pub(crate) members: Vec<u32>,
    /// A user-assigned managed identity's resource id.
    pub(crate) mi_resource: Option<String>,
    pub(crate) archetype: &'static str,
    pub(crate) created: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AzScope {
    Mg(u32),
    Sub(u32),
    Rg(u32, u16),
    Res(u32, u32),
}

pub(crate) struct Assignment {
    pub(crate) id: String,
    pub(crate) principal: u32,
    pub(crate) role: u16,
    pub(crate) scope: AzScope,
    pub(crate) created: i64,
}

pub(crate) struct AzRole {
    /// The role definition GUID.
    pub(crate) guid: String,
    pub(crate) name: String,
    /// Custom roles: their definition (for `role-definitions.json`) and assignable scopes.
    pub(crate) custom: Option<(Vec<AzurePermission>, Vec<String>, String)>,
    pub(crate) set: OpSet,
}

pub(crate) struct Azure {
    pub(crate) tenant: String,
    pub(crate) mgs: Vec<Mg>,
    pub(crate) subs: Vec<Sub>,
    pub(crate) principals: Vec<Principal>,
    pub(crate) assignments: Vec<Assignment>,
    pub(crate) roles: Vec<AzRole>,
    /// The Activity Log diagnostic setting of each subscription (deleted by one attack).
    pub(crate) diag_setting: String,
}

impl Azure {
    pub(crate) fn scope_str(&self, s: AzScope) -> String {
        match s {
            AzScope::Mg(m) => format!("/providers/Microsoft.Management/managementGroups/{}", self.mgs[m as usize].name),
            AzScope::Sub(i) => format!("/subscriptions/{}", self.subs[i as usize].id),
            AzScope::Rg(i, rg) => self.subs[i as usize].rg_id(rg),
            AzScope::Res(i, r) => self.subs[i as usize].res_id(r),
        }
    }

    /// Whether management group `m` is `sub`'s or one of its ancestors.
    fn mg_covers(&self, m: u32, sub: u32) -> bool {
        let mut cur = Some(self.subs[sub as usize].mg);
        let mut hops = 0;
        while let Some(c) = cur {
            if c == m {
                return true;
            }
            cur = self.mgs[c as usize].parent;
            hops += 1;
            if hops > 16 {
                break;
            }
        }
        false
    }

    /// The management-group chain of a subscription, root first.
    pub(crate) fn mg_chain(&self, sub: u32) -> Vec<u32> {
        let mut out = Vec::new();
        let mut cur = Some(self.subs[sub as usize].mg);
        while let Some(c) = cur {
            out.push(c);
            cur = self.mgs[c as usize].parent;
            if out.len() > 16 {
                break;
            }
        }
        out.reverse();
        out
    }

    fn role(&self, name: &str) -> u16 {
        self.roles.iter().position(|r| r.name == name).unwrap_or(0) as u16
    }
}

// ---------------------------------------------------------------------------------------------- gcp

pub(crate) struct Folder {
    pub(crate) id: String,
    pub(crate) display: String,
}

pub(crate) struct Project {
    pub(crate) id: String,
    pub(crate) number: String,
    pub(crate) folder: u32,
    pub(crate) buckets: Vec<String>,
    pub(crate) instances: Vec<(String, String, String)>,
    pub(crate) secrets: Vec<String>,
    pub(crate) topics: Vec<String>,
    pub(crate) services: Vec<String>,
    pub(crate) created: i64,
}

pub(crate) struct SaKey {
    pub(crate) id: String,
    pub(crate) user_managed: bool,
    pub(crate) created: i64,
}

pub(crate) struct Sa {
    pub(crate) email: String,
    pub(crate) project: u32,
    pub(crate) unique_id: String,
    pub(crate) display: String,
    pub(crate) archetype: &'static str,
    pub(crate) keys: Vec<SaKey>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum GScope {
    Org,
    Folder(u32),
    Project(u32),
    Bucket(u32, u16),
}

pub(crate) struct Binding {
    pub(crate) scope: GScope,
    pub(crate) role: u16,
    pub(crate) members: Vec<String>,
}

pub(crate) struct GRole {
    pub(crate) name: String,
    pub(crate) title: String,
    pub(crate) custom: bool,
    pub(crate) perms: Vec<u32>,
}

pub(crate) struct Gcp {
    pub(crate) org: String,
    pub(crate) folders: Vec<Folder>,
    pub(crate) projects: Vec<Project>,
    pub(crate) sas: Vec<Sa>,
    pub(crate) bindings: Vec<Binding>,
    pub(crate) roles: Vec<GRole>,
}

impl Gcp {
    fn role(&self, name: &str) -> u16 {
        self.roles.iter().position(|r| r.name == name).unwrap_or(0) as u16
    }

    pub(crate) fn ancestors(&self, p: u32) -> Vec<String> {
        let pr = &self.projects[p as usize];
        vec![
            format!("projects/{}", pr.number),
            format!("folders/{}", self.folders[pr.folder as usize].id),
            format!("organizations/{}", self.org),
        ]
    }

    fn covers(&self, s: GScope, p: u32) -> bool {
        match s {
            GScope::Org => true,
            GScope::Folder(f) => self.projects[p as usize].folder == f,
            GScope::Project(q) | GScope::Bucket(q, _) => q == p,
        }
    }

    pub(crate) fn scope_str(&self, s: GScope) -> String {
        match s {
            GScope::Org => format!("organizations/{}", self.org),
            GScope::Folder(f) => format!("folders/{}", self.folders[f as usize].id),
            GScope::Project(p) => format!("projects/{}", self.projects[p as usize].id),
            GScope::Bucket(p, b) => format!("projects/_/buckets/{}", self.projects[p as usize].buckets[b as usize]),
        }
    }
}

// ------------------------------------------------------------------------------------------- actors

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Cl {
    Azure,
    Gcp,
}

/// Where a scoped grant lets its holder act.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Restrict {
    Anywhere,
    Rg(u16),
    Res(u32),
    Bucket(u16),
}

pub(crate) struct Grant {
    pub(crate) role: u16,
    pub(crate) scope: String,
    /// Granted at a management group / folder / organization above the subscription or project.
    pub(crate) inherited: bool,
    pub(crate) restrict: Restrict,
    /// The group (display name) the grant reaches the principal through.
    pub(crate) via_group: Option<String>,
}

/// One identity: a principal in one subscription or project.
pub(crate) struct Actor {
    pub(crate) cloud: Cl,
    /// Subscription or project index.
    pub(crate) scope: u32,
    pub(crate) uid: String,
    pub(crate) kind: &'static str,
    pub(crate) name: String,
    /// Azure object id, or the GCP member (`user:…`, `serviceAccount:…`).
    pub(crate) principal_id: String,
    pub(crate) archetype: &'static str,
    pub(crate) human: Option<u32>,
    /// Azure principal or GCP service account index.
    pub(crate) az: Option<u32>,
    pub(crate) sa: Option<u32>,
    /// GCP `principalEmail`.
    pub(crate) email: String,
    pub(crate) grants: Vec<Grant>,
    /// Calls (indices into `AZ_OPS` / `GCP_CALLS`) with where they may act, and Zipf weights.
    pub(crate) calls: Vec<(u16, Restrict)>,
    pub(crate) cum: Vec<f64>,
    pub(crate) weight: f64,
    pub(crate) window: Option<(u32, u32)>,
    pub(crate) ips: Vec<String>,
    pub(crate) ua: u8,
    pub(crate) super_identity: bool,
}

/// An AWS identity of the existing generator's organization that belongs to a human.
pub(crate) struct AwsLink {
    pub(crate) arn: String,
    pub(crate) account: u32,
    pub(crate) user: Option<String>,
}

pub(crate) struct World {
    pub(crate) humans: Vec<Human>,
    pub(crate) okta_groups: Vec<OktaGroup>,
    pub(crate) okta_host: String,
    pub(crate) customer_id: String,
    pub(crate) identity_store: String,
    pub(crate) azure: Azure,
    pub(crate) gcp: Gcp,
    pub(crate) actors: Vec<Actor>,
    /// IAM user name → email tag value, per AWS account index.
    pub(crate) aws_tags: BTreeMap<(u32, String), String>,
    /// Each of [`AZ_OPS`]' index in the Azure operation universe (`None`: no built-in role names it).
    pub(crate) az_ix: Vec<Option<u32>>,
    /// Each of [`GCP_CALLS`]' permission's index in the GCP permission universe.
    pub(crate) gcp_ix: Vec<Option<u32>>,
}

/// The built-in Azure roles the generator assigns, by `roleName`.
const AZ_BUILTIN: &[&str] = &[
    "Owner",
    "Contributor",
    "Reader",
    "User Access Administrator",
    "Storage Blob Data Reader",
    "Storage Account Contributor",
    "Virtual Machine Contributor",
    "Network Contributor",
    "Website Contributor",
    "Azure Kubernetes Service Cluster User Role",
];
const CUSTOM_AZ_ROLE: &str = "VM Operator (custom)";
const GCP_PREDEFINED: &[&str] = &[
    "roles/owner",
    "roles/editor",
    "roles/viewer",
    "roles/storage.admin",
    "roles/storage.objectViewer",
    "roles/storage.objectAdmin",
    "roles/bigquery.jobUser",
    "roles/bigquery.dataViewer",
    "roles/compute.instanceAdmin.v1",
    "roles/secretmanager.secretAccessor",
    "roles/logging.viewer",
    "roles/pubsub.editor",
    "roles/run.viewer",
    "roles/iam.securityReviewer",
];
pub(crate) const OWNER_GUID: &str = "8e3af657-a8ff-443c-a75c-2fe8c4bcb635";

fn role_missing(what: &str) -> SynthError {
    SynthError::InvalidSpec(format!("embedded role data lacks {what}"))
}

impl World {
    pub(crate) fn build(
        spec: &MultiCloudSpec,
        rng: &mut ChaCha8Rng,
        aws: &Org,
        az_ref: &AzureRoles,
        gcp_ref: &GcpRoles,
    ) -> Result<World, SynthError> {
        let start = spec.start.millis().div_euclid(1000);
        let mut w = World {
            humans: Vec::new(),
            okta_groups: Vec::new(),
            okta_host: "example-org.okta.com".into(),
            customer_id: format!("C0{}", {
                let mut s = String::new();
                push_alnum(&mut s, rng, 7);
                s.to_ascii_lowercase()
            }),
            identity_store: format!("d-{}", hex(rng, 10)),
            azure: Azure {
                tenant: uuid(rng),
                mgs: Vec::new(),
                subs: Vec::new(),
                principals: Vec::new(),
                assignments: Vec::new(),
                roles: Vec::new(),
                diag_setting: "activity-log-to-storage".into(),
            },
            gcp: Gcp {
                org: digits(rng, 12),
                folders: Vec::new(),
                projects: Vec::new(),
                sas: Vec::new(),
                bindings: Vec::new(),
                roles: Vec::new(),
            },
            actors: Vec::new(),
            aws_tags: BTreeMap::new(),
            az_ix: AZ_OPS.iter().map(|o| az_ref.op(o.op)).collect(),
            gcp_ix: GCP_CALLS.iter().map(|c| gcp_ref.perm(c.permission)).collect(),
        };
        // every operation of normal activity is one the catalogs know (the embedded data changed?)
        for (o, ix) in AZ_OPS.iter().zip(&w.az_ix) {
            if o.normal && ix.is_none() {
                return Err(role_missing(&format!("the Azure operation {}", o.op)));
            }
        }
        for (c, ix) in GCP_CALLS.iter().zip(&w.gcp_ix) {
            if ix.is_none() {
                return Err(role_missing(&format!("the GCP permission {}", c.permission)));
            }
        }
        w.population(spec, rng, aws, start);
        w.okta(rng);
        w.roles(az_ref, gcp_ref)?;
        if spec.azure_subscriptions > 0 {
            w.build_azure(spec, rng, start);
        }
        if spec.gcp_projects > 0 {
            w.build_gcp(spec, rng, start);
        }
        w.actors_azure();
        w.actors_gcp();
        w.habits(spec, rng);
        for h in &mut w.humans {
            h.aws_users.sort();
            h.sso_roles.sort();
        }
        Ok(w)
    }

    /// The humans: every address an IAM Identity Center role session carries, the IAM users named
    /// after a person (most tagged with their address), then new people up to `spec.humans`.
    fn population(&mut self, spec: &MultiCloudSpec, rng: &mut ChaCha8Rng, aws: &Org, start: i64) {
        let mut by_email: BTreeMap<String, (String, String)> = BTreeMap::new();
        let mut links: Vec<(String, AwsLink)> = Vec::new();
        for id in &aws.identities {
            if id.kind == Kind::Role && id.sso {
                for s in &id.sessions {
                    if let Some((f, l)) = split_email(&s.name) {
                        by_email.entry(s.name.to_ascii_lowercase()).or_insert((f, l));
                        links.push((
                            s.name.to_ascii_lowercase(),
                            AwsLink { arn: id.arn.clone(), account: id.account, user: None },
                        ));
                    }
                }
            }
        }
        for id in &aws.identities {
            // IAM users named `first.last` (a `-2` suffix marks a second user of the same name in
            // the account: left untagged, as are about 1 in 7 of the rest)
            if id.kind == Kind::User
                && id.archetype != crate::org::Archetype::DeployUser
                && let Some((f, l)) = split_name(&id.name)
                && rng.random_bool(0.85)
            {
                let email = format!("{f}.{l}@{DOMAIN}");
                by_email.entry(email.clone()).or_insert((f, l));
                links.push((email, AwsLink { arn: id.arn.clone(), account: id.account, user: Some(id.name.clone()) }));
            }
        }
        let mut tries = 0;
        while by_email.len() < spec.humans as usize && tries < spec.humans as u64 * 50 + 1000 {
            tries += 1;
            let f = pick(rng, FIRST);
            let l = pick(rng, LAST);
            let n = if tries > spec.humans as u64 * 4 { rng.random_range(2..1000).to_string() } else { String::new() };
            let email = format!("{f}.{l}{n}@{DOMAIN}");
            by_email.entry(email).or_insert((f.to_string(), format!("{l}{n}")));
        }
        for (email, (first, last)) in by_email {
            let alt = rng.random_bool(0.15).then(|| format!("{}.{}@{DOMAIN}", cap(&first), cap(&last)));
            let n_ips = rng.random_range(1..=3);
            self.humans.push(Human {
                first,
                last,
                email,
                alt,
                okta_id: okta_id(rng, "00u"),
                ws_id: rng.random_bool(0.93).then(|| digits(rng, 21)),
                ws_2sv: rng.random_bool(0.85),
                idc_id: None,
                entra: None,
                gcp: rng.random_bool(0.6),
                azure: rng.random_bool(0.6),
                aws_users: Vec::new(),
                sso_roles: Vec::new(),
                created: start - rng.random_range(86_400 * 30..86_400 * 1500),
                ips: ips(rng, n_ips),
                okta_groups: Vec::new(),
            });
        }
        let index: BTreeMap<String, u32> =
            self.humans.iter().enumerate().map(|(i, h)| (h.email.clone(), i as u32)).collect();
        for (email, link) in links {
            let Some(&hi) = index.get(&email) else { continue };
            let h = &mut self.humans[hi as usize];
            match &link.user {
                Some(user) => {
                    h.aws_users.push(link.arn.clone());
                    self.aws_tags.insert((link.account, user.clone()), h.spelled().to_string());
                }
                None => {
                    if !h.sso_roles.contains(&link.arn) {
                        h.sso_roles.push(link.arn.clone());
                    }
                    if h.idc_id.is_none() {
                        h.idc_id = Some(format!("{}-{}", hex(rng, 10), uuid(rng)));
                    }
                }
            }
        }
    }

    fn okta(&mut self, rng: &mut ChaCha8Rng) {
        for (name, desc) in [
            ("Everyone-Engineering", "All engineers"),
            ("Azure-Users", "Assigned to the Azure enterprise app"),
            ("GCP-Users", "Assigned to the Google Cloud app"),
            ("AWS-SSO-Users", "Provisioned to IAM Identity Center"),
        ] {
            self.okta_groups.push(OktaGroup {
                id: okta_id(rng, "00g"),
                name: name.into(),
                description: desc.into(),
                members: Vec::new(),
            });
        }
        for (i, h) in self.humans.iter_mut().enumerate() {
            let i = i as u32;
            let mut push = |g: usize, h: &mut Human| {
                self.okta_groups[g].members.push(i);
                h.okta_groups.push(g as u32);
            };
            push(0, h);
            if h.azure {
                push(1, h);
            }
            if h.gcp {
                push(2, h);
            }
            if h.idc_id.is_some() {
                push(3, h);
            }
        }
    }

    fn roles(&mut self, az: &AzureRoles, gcp: &GcpRoles) -> Result<(), SynthError> {
        for name in AZ_BUILTIN {
            let def = az.builtin(name).ok_or_else(|| role_missing(name))?;
            self.azure.roles.push(AzRole {
                guid: def.name.clone(),
                name: def.role_name.clone(),
                custom: None,
                set: az.effective(&def.permissions),
            });
        }
        // A custom role: concrete operations and one wildcard the truth expands itself.
        let perms = vec![AzurePermission {
            actions: vec![
                "Microsoft.Compute/virtualMachines/read".into(),
                "Microsoft.Compute/virtualMachines/start/action".into(),
                "Microsoft.Compute/virtualMachines/restart/action".into(),
                "Microsoft.Compute/virtualMachines/deallocate/action".into(),
                "Microsoft.Compute/disks/read".into(),
                "Microsoft.Network/*/read".into(),
                "Microsoft.Resources/subscriptions/resourceGroups/read".into(),
            ],
            not_actions: vec!["Microsoft.Network/virtualNetworks/read".into()],
            data_actions: Vec::new(),
            not_data_actions: Vec::new(),
        }];
        let set = az.effective(&perms);
        self.azure.roles.push(AzRole {
            guid: "6f6b0a5e-3c1e-4a5f-9d7e-2b8c4e1f0a91".into(),
            name: CUSTOM_AZ_ROLE.into(),
            custom: Some((
                perms,
                Vec::new(),
                "Start, restart and deallocate virtual machines; read networking.".into(),
            )),
            set,
        });
        for name in GCP_PREDEFINED {
            let perms = gcp.predefined(name).ok_or_else(|| role_missing(name))?;
            self.gcp.roles.push(GRole {
                name: (*name).to_string(),
                title: (*name).to_string(),
                custom: false,
                perms: perms.to_vec(),
            });
        }
        let custom = [
            "storage.buckets.list",
            "storage.buckets.get",
            "storage.buckets.getIamPolicy",
            "storage.objects.list",
            "resourcemanager.projects.get",
            "logging.logEntries.list",
        ];
        let mut perms: Vec<u32> = custom.iter().filter_map(|p| gcp.perm(p)).collect();
        if perms.len() != custom.len() {
            return Err(role_missing("a permission of the custom GCP role"));
        }
        perms.sort_unstable();
        self.gcp.roles.push(GRole {
            name: String::new(), // set with the organization id
            title: "Storage Auditor".into(),
            custom: true,
            perms,
        });
        Ok(())
    }

    fn build_azure(&mut self, spec: &MultiCloudSpec, rng: &mut ChaCha8Rng, start: i64) {
        let az = &mut self.azure;
        let tenant = az.tenant.clone();
        for (name, display, parent) in [
            (tenant.as_str(), "Tenant Root Group", None),
            ("mg-platform", "Platform", Some(0)),
            ("mg-landingzones", "Landing Zones", Some(0)),
            ("mg-corp", "Corp", Some(2)),
            ("mg-online", "Online", Some(2)),
        ] {
            az.mgs.push(Mg { name: name.into(), display: display.into(), parent });
        }
        if let Some((_, scopes, _)) = az.roles.last_mut().and_then(|r| r.custom.as_mut()) {
            scopes.push(format!("/providers/Microsoft.Management/managementGroups/{}", "mg-landingzones"));
        }
        let locations = ["westeurope", "eastus", "northeurope", "eastus2"];
        let mut used_names = BTreeSet::new();
        for i in 0..spec.azure_subscriptions {
            let word = pick(rng, WORDS);
            let env = ENVS[i as usize % ENVS.len()];
            let name = unique(&mut used_names, format!("sub-{word}-{env}"));
            let mg = [1, 3, 4][i as usize % 3];
            let mut sub =
                Sub { id: uuid(rng), name, mg, rgs: Vec::new(), res: Vec::new(), location: locations[i as usize % 4] };
            let n_rg = 3 + (spec.identities_per_scope / 60).min(20) as usize;
            let mut words: Vec<&str> = WORDS.to_vec();
            words.shuffle(rng);
            for r in 0..n_rg {
                sub.rgs.push(format!("rg-{}-{env}", words[r % words.len()]));
            }
            sub.rgs.sort();
            sub.rgs.dedup();
            for (r, rg) in sub.rgs.iter().enumerate() {
                let base = rg.trim_start_matches("rg-").replace('-', "");
                let short: String = base.chars().take(10).collect();
                let kinds = [AzKind::Vm, AzKind::Disk, AzKind::Storage, AzKind::Nsg, AzKind::Vnet, AzKind::Site];
                for (k, kind) in kinds.iter().enumerate() {
                    let n = if k < 2 { 2 } else { 1 };
                    for j in 0..n {
                        let name = match kind {
                            AzKind::Vm => format!("vm-{short}-{:02}", j + 1),
                            AzKind::Disk => format!("vm-{short}-{:02}_OsDisk_1_{}", j + 1, hex(rng, 32)),
                            AzKind::Storage => format!("st{short}{}", hex(rng, 6)),
                            AzKind::Nsg => format!("nsg-{short}"),
                            AzKind::Vnet => format!("vnet-{short}"),
                            AzKind::Site => format!("app-{short}-{}", hex(rng, 4)),
                            AzKind::Aks => format!("aks-{short}"),
                        };
                        sub.res.push(AzRes { rg: r as u16, kind: *kind, name });
                    }
                }
                if r == 0 {
                    sub.res.push(AzRes { rg: 0, kind: AzKind::Aks, name: format!("aks-{short}") });
                }
            }
            az.subs.push(sub);
        }

        // principals
        let entra = |humans: &mut Vec<Human>, az: &mut Azure, rng: &mut ChaCha8Rng, hi: u32| -> u32 {
            if let Some(p) = humans[hi as usize].entra {
                return p;
            }
            let h = &humans[hi as usize];
            let p = az.principals.len() as u32;
            az.principals.push(Principal {
                oid: uuid(rng),
                kind: PKind::User,
                display: h.display(),
                upn: Some(h.spelled().to_string()),
                app_id: None,
                human: Some(hi),
                members: Vec::new(),
                mi_resource: None,
                archetype: "",
                created: h.created + rng.random_range(0..86_400 * 5),
            });
            humans[hi as usize].entra = Some(p);
            p
        };
        let azure_humans: Vec<u32> =
            self.humans.iter().enumerate().filter(|(_, h)| h.azure).map(|(i, _)| i as u32).collect();
        if azure_humans.is_empty() {
            return;
        }
        let role = |az: &Azure, n: &str| az.role(n);
        let created = |rng: &mut ChaCha8Rng| start - rng.random_range(86_400..86_400 * 700);
        // Management-group level: a platform-admins group with Owner on the landing zones (inherited
        // by their subscriptions), a security-readers group with Reader on the tenant root.
        let group = |az: &mut Azure, rng: &mut ChaCha8Rng, name: &str, members: Vec<u32>| -> u32 {
            let p = az.principals.len() as u32;
            az.principals.push(Principal {
                oid: uuid(rng),
                kind: PKind::Group,
                display: name.into(),
                upn: None,
                app_id: None,
                human: None,
                members,
                mi_resource: None,
                archetype: "group",
                created: created(rng),
            });
            p
        };
        let pick_humans = |rng: &mut ChaCha8Rng, n: usize| -> Vec<u32> {
            let mut v: Vec<u32> = azure_humans.choose_multiple(rng, n.min(azure_humans.len())).copied().collect();
            v.sort_unstable();
            v
        };
        let admins: Vec<u32> =
            pick_humans(rng, 2).into_iter().map(|h| entra(&mut self.humans, &mut self.azure, rng, h)).collect();
        let readers: Vec<u32> =
            pick_humans(rng, 3).into_iter().map(|h| entra(&mut self.humans, &mut self.azure, rng, h)).collect();
        let az = &mut self.azure;
        let g_admins = group(az, rng, "grp-platform-admins", admins);
        let g_readers = group(az, rng, "grp-security-readers", readers);
        let owner = role(az, "Owner");
        let reader = role(az, "Reader");
        let contributor = role(az, "Contributor");
        let assign = |az: &mut Azure, rng: &mut ChaCha8Rng, principal: u32, role: u16, scope: AzScope| {
            az.assignments.push(Assignment { id: uuid(rng), principal, role, scope, created: created(rng) });
        };
        assign(az, rng, g_admins, owner, AzScope::Mg(2));
        assign(az, rng, g_readers, reader, AzScope::Mg(0));
        let n_subs = self.azure.subs.len() as u32;
        for s in 0..n_subs {
            let target = spec.identities_per_scope as usize;
            // the subscription's owner and a developers group with Contributor on the first RG
            let hs = pick_humans(rng, 1 + target * 45 / 100);
            let mut it = hs.into_iter();
            if let Some(h) = it.next() {
                let p = entra(&mut self.humans, &mut self.azure, rng, h);
                assign(&mut self.azure, rng, p, owner, AzScope::Sub(s));
            }
            let devs: Vec<u32> =
                pick_humans(rng, 3).into_iter().map(|h| entra(&mut self.humans, &mut self.azure, rng, h)).collect();
            let sub_name = self.azure.subs[s as usize].name.clone();
            let g = group(&mut self.azure, rng, &format!("grp-{sub_name}-developers"), devs);
            assign(&mut self.azure, rng, g, contributor, AzScope::Rg(s, 0));
            let n_rg = self.azure.subs[s as usize].rgs.len() as u16;
            for h in it {
                let p = entra(&mut self.humans, &mut self.azure, rng, h);
                let az = &mut self.azure;
                let rg = rng.random_range(0..n_rg);
                let (r, scope) = match rng.random_range(0..100) {
                    0..35 => (reader, AzScope::Sub(s)),
                    35..60 => (contributor, AzScope::Rg(s, rg)),
                    60..72 => (contributor, AzScope::Sub(s)),
                    72..82 => (role(az, CUSTOM_AZ_ROLE), AzScope::Rg(s, rg)),
                    82..88 => (role(az, "Website Contributor"), AzScope::Rg(s, rg)),
                    88..95 => (role(az, "Azure Kubernetes Service Cluster User Role"), AzScope::Sub(s)),
                    _ => (role(az, "User Access Administrator"), AzScope::Sub(s)),
                };
                assign(az, rng, p, r, scope);
            }
            // workloads
            let n_work = target.saturating_sub(1 + target * 45 / 100).max(2);
            for k in 0..n_work {
                let az = &mut self.azure;
                let sub = &az.subs[s as usize];
                let rg = rng.random_range(0..n_rg);
                let word = pick(rng, WORDS);
                let storage: Vec<u32> =
                    (0..sub.res.len() as u32).filter(|&r| sub.res[r as usize].kind == AzKind::Storage).collect();
                let (kind, display, arch, r, scope) = match if k == 0 { 0 } else { rng.random_range(0..100) } {
                    0 => (
                        PKind::ServicePrincipal,
                        format!("sp-github-deploy-{}", sub.name),
                        "ci_deploy",
                        contributor,
                        AzScope::Sub(s),
                    ),
                    1..30 => (
                        PKind::ManagedIdentity,
                        format!("id-{word}-app"),
                        "app_identity",
                        role(az, "Storage Blob Data Reader"),
                        AzScope::Res(s, *storage.choose(rng).unwrap_or(&0)),
                    ),
                    30..45 => (
                        PKind::ManagedIdentity,
                        format!("id-aks-{word}"),
                        "aks_identity",
                        role(az, "Network Contributor"),
                        AzScope::Rg(s, rg),
                    ),
                    45..60 => (
                        PKind::ServicePrincipal,
                        format!("sp-backup-{word}"),
                        "backup",
                        role(az, "Virtual Machine Contributor"),
                        AzScope::Rg(s, rg),
                    ),
                    60..72 => (
                        PKind::ServicePrincipal,
                        format!("sp-storage-ops-{word}"),
                        "storage_ops",
                        role(az, "Storage Account Contributor"),
                        AzScope::Sub(s),
                    ),
                    72..85 => (
                        PKind::ManagedIdentity,
                        format!("id-webapp-{word}"),
                        "webapp_identity",
                        role(az, "Website Contributor"),
                        AzScope::Rg(s, rg),
                    ),
                    _ => (
                        PKind::ServicePrincipal,
                        format!("sp-monitoring-{word}"),
                        "monitoring",
                        reader,
                        AzScope::Sub(s),
                    ),
                };
                let p = az.principals.len() as u32;
                let mi_resource = (kind == PKind::ManagedIdentity).then(|| {
                    format!(
                        "{}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/{display}-{}",
                        sub.rg_id(rg),
                        hex(rng, 4)
                    )
                });
                az.principals.push(Principal {
                    oid: uuid(rng),
                    kind,
                    display,
                    upn: None,
                    app_id: Some(uuid(rng)),
                    human: None,
                    members: Vec::new(),
                    mi_resource,
                    archetype: arch,
                    created: created(rng),
                });
                assign(az, rng, p, r, scope);
            }
        }
    }

    fn build_gcp(&mut self, spec: &MultiCloudSpec, rng: &mut ChaCha8Rng, start: i64) {
        let g = &mut self.gcp;
        let org = g.org.clone();
        if let Some(r) = g.roles.last_mut() {
            r.name = format!("organizations/{org}/roles/storageAuditor");
        }
        for display in ["Production", "Non-Production", "Shared Services"] {
            g.folders.push(Folder { id: digits(rng, 12), display: display.into() });
        }
        let mut used = BTreeSet::new();
        for i in 0..spec.gcp_projects {
            let word = pick(rng, WORDS);
            let env = ENVS[i as usize % ENVS.len()];
            let id = unique(&mut used, format!("{word}-{env}-{}", rng.random_range(1000..9999)));
            let zones = ["us-central1-a", "europe-west1-b", "us-east1-c"];
            let n_b = 3 + (spec.identities_per_scope / 100).min(10) as usize;
            let mut words: Vec<&str> = WORDS.to_vec();
            words.shuffle(rng);
            let p = Project {
                buckets: (0..n_b).map(|k| format!("{id}-{}", words[k % words.len()])).collect(),
                instances: (0..3)
                    .map(|k| {
                        (zones[k % 3].to_string(), format!("{}-vm-{}", words[k % words.len()], k + 1), digits(rng, 19))
                    })
                    .collect(),
                secrets: (0..2).map(|k| format!("{}-db-password", words[(k + 3) % words.len()])).collect(),
                topics: (0..2).map(|k| format!("{}-events", words[(k + 5) % words.len()])).collect(),
                services: (0..2).map(|k| format!("{}-api", words[(k + 7) % words.len()])).collect(),
                number: digits(rng, 12),
                folder: if env == "prod" {
                    0
                } else if env == "shared" {
                    2
                } else {
                    1
                },
                created: start - rng.random_range(86_400 * 30..86_400 * 1200),
                id,
            };
            g.projects.push(p);
        }
        let gcp_humans: Vec<u32> =
            self.humans.iter().enumerate().filter(|(_, h)| h.gcp).map(|(i, _)| i as u32).collect();
        let member = |humans: &[Human], h: u32| format!("user:{}", humans[h as usize].email);
        let bind = |g: &mut Gcp, scope: GScope, role: &str, m: String| {
            let role = g.role(role);
            if let Some(b) = g.bindings.iter_mut().find(|b| b.scope == scope && b.role == role) {
                if !b.members.contains(&m) {
                    b.members.push(m);
                }
            } else {
                g.bindings.push(Binding { scope, role, members: vec![m] });
            }
        };
        let pick_h = |rng: &mut ChaCha8Rng, n: usize| -> Vec<u32> {
            let mut v: Vec<u32> = gcp_humans.choose_multiple(rng, n.min(gcp_humans.len())).copied().collect();
            v.sort_unstable();
            v
        };
        let custom_name = self.gcp.roles.last().map(|r| r.name.clone()).unwrap_or_default();
        if !gcp_humans.is_empty() {
            let hs = pick_h(rng, 4);
            let roles = ["roles/owner", "roles/iam.securityReviewer", "roles/viewer", "roles/editor"];
            let scopes = [GScope::Org, GScope::Org, GScope::Folder(0), GScope::Folder(1)];
            for (k, h) in hs.into_iter().enumerate() {
                bind(&mut self.gcp, scopes[k], roles[k], member(&self.humans, h));
            }
        }
        let n_proj = self.gcp.projects.len() as u32;
        let target = spec.identities_per_scope as usize;
        for p in 0..n_proj {
            let pid = self.gcp.projects[p as usize].id.clone();
            let number = self.gcp.projects[p as usize].number.clone();
            let hs = pick_h(rng, target * 45 / 100);
            for (k, h) in hs.into_iter().enumerate() {
                let m = member(&self.humans, h);
                let r = match k {
                    0 => "roles/owner",
                    1 => "roles/storage.admin",
                    _ => match rng.random_range(0..100) {
                        0..30 => "roles/viewer",
                        30..50 => "roles/editor",
                        50..62 => "roles/compute.instanceAdmin.v1",
                        62..75 => "roles/bigquery.jobUser",
                        75..85 => "roles/logging.viewer",
                        85..93 => custom_name.as_str(),
                        _ => "roles/run.viewer",
                    },
                };
                bind(&mut self.gcp, GScope::Project(p), r, m.clone());
                if r == "roles/bigquery.jobUser" {
                    bind(&mut self.gcp, GScope::Project(p), "roles/bigquery.dataViewer", m);
                }
            }
            // workloads: the default compute service account (Editor, as GCP grants it), then apps
            let sa = |g: &mut Gcp, rng: &mut ChaCha8Rng, email: String, display: String, arch: &'static str| {
                let n_keys = if arch == "ci_deploy" || rng.random_bool(0.2) { 1 } else { 0 };
                let created = start - rng.random_range(86_400 * 10..86_400 * 900);
                let mut keys = vec![SaKey { id: hex(rng, 40), user_managed: false, created: start - 86_400 * 3 }];
                for _ in 0..n_keys {
                    keys.push(SaKey { id: hex(rng, 40), user_managed: true, created: created + 86_400 });
                }
                g.sas.push(Sa { email, project: p, unique_id: digits(rng, 21), display, archetype: arch, keys });
                format!("serviceAccount:{}", g.sas[g.sas.len() - 1].email)
            };
            let m = sa(
                &mut self.gcp,
                rng,
                format!("{number}-compute@developer.gserviceaccount.com"),
                "Compute Engine default service account".into(),
                "default_compute",
            );
            bind(&mut self.gcp, GScope::Project(p), "roles/editor", m);
            let n_work = target.saturating_sub(target * 45 / 100).max(3);
            let mut names = BTreeSet::new();
            for k in 0..n_work {
                let word = pick(rng, WORDS);
                let kind = if k < 2 { k } else { rng.random_range(0..100) };
                let (base, arch, roles): (String, &'static str, &[&str]) = match kind {
                    0 => ("ci-deploy".into(), "ci_deploy", &["roles/editor"]),
                    1 => (format!("{word}-etl"), "bucket_writer", &[]),
                    2..45 => (
                        format!("{word}-app"),
                        "app",
                        &["roles/storage.objectViewer", "roles/secretmanager.secretAccessor", "roles/pubsub.editor"],
                    ),
                    45..70 => (
                        format!("{word}-pipeline"),
                        "data_pipeline",
                        &["roles/bigquery.jobUser", "roles/bigquery.dataViewer", "roles/storage.objectAdmin"],
                    ),
                    70..85 => (format!("{word}-vm-runner"), "vm_runner", &["roles/compute.instanceAdmin.v1"]),
                    _ => (format!("{word}-monitoring"), "monitoring", &["roles/logging.viewer", "roles/viewer"]),
                };
                let local = unique(&mut names, base);
                let email = format!("{local}@{pid}.iam.gserviceaccount.com");
                let m = sa(&mut self.gcp, rng, email, local.replace('-', " "), arch);
                if roles.is_empty() {
                    // a bucket-level binding only: the identity's grant is scoped to that bucket
                    bind(&mut self.gcp, GScope::Bucket(p, 0), "roles/storage.objectAdmin", m);
                } else {
                    for r in roles {
                        bind(&mut self.gcp, GScope::Project(p), r, m.clone());
                    }
                }
            }
        }
    }

    /// One actor per (principal, subscription) with any assignment reaching it there, directly or
    /// through a group or a management group.
    fn actors_azure(&mut self) {
        let az = &self.azure;
        let mut map: BTreeMap<(u32, u32), Vec<Grant>> = BTreeMap::new();
        for a in &az.assignments {
            let subs: Vec<u32> = match a.scope {
                AzScope::Mg(m) => (0..az.subs.len() as u32).filter(|&s| az.mg_covers(m, s)).collect(),
                AzScope::Sub(s) | AzScope::Rg(s, _) | AzScope::Res(s, _) => vec![s],
            };
            let restrict = match a.scope {
                AzScope::Mg(_) | AzScope::Sub(_) => Restrict::Anywhere,
                AzScope::Rg(_, rg) => Restrict::Rg(rg),
                AzScope::Res(_, r) => Restrict::Res(r),
            };
            let p = &az.principals[a.principal as usize];
            for s in subs {
                let grant = |via: Option<String>| Grant {
                    role: a.role,
                    scope: az.scope_str(a.scope),
                    inherited: matches!(a.scope, AzScope::Mg(_)),
                    restrict,
                    via_group: via,
                };
                map.entry((s, a.principal)).or_default().push(grant(None));
                if p.kind == PKind::Group {
                    for &m in &p.members {
                        map.entry((s, m)).or_default().push(grant(Some(p.display.clone())));
                    }
                }
            }
        }
        for ((s, pi), grants) in map {
            let p = &az.principals[pi as usize];
            let sub = &az.subs[s as usize];
            let super_identity = grants
                .iter()
                .any(|g| az.roles[g.role as usize].guid == OWNER_GUID && matches!(g.restrict, Restrict::Anywhere));
            let (kind, name) = match p.kind {
                PKind::User => ("user", p.upn.clone().unwrap_or_default()),
                PKind::Group => ("group", p.display.clone()),
                _ => ("service_account", p.display.clone()),
            };
            self.actors.push(Actor {
                cloud: Cl::Azure,
                scope: s,
                uid: format!("azure:/subscriptions/{}/principals/{}", sub.id, p.oid),
                kind,
                name,
                principal_id: p.oid.clone(),
                archetype: if p.human.is_some() { "human" } else { p.archetype },
                human: p.human,
                az: Some(pi),
                sa: None,
                email: String::new(),
                grants,
                calls: Vec::new(),
                cum: Vec::new(),
                weight: 0.0,
                window: None,
                ips: Vec::new(),
                ua: 0,
                super_identity,
            });
        }
    }

    fn actors_gcp(&mut self) {
        let g = &self.gcp;
        let mut map: BTreeMap<(u32, String), Vec<Grant>> = BTreeMap::new();
        for b in &g.bindings {
            for p in 0..g.projects.len() as u32 {
                if !g.covers(b.scope, p) {
                    continue;
                }
                for m in &b.members {
                    if !(m.starts_with("user:") || m.starts_with("serviceAccount:")) {
                        continue; // allUsers / allAuthenticatedUsers are no identity
                    }
                    map.entry((p, m.clone())).or_default().push(Grant {
                        role: b.role,
                        scope: g.scope_str(b.scope),
                        inherited: matches!(b.scope, GScope::Org | GScope::Folder(_)),
                        restrict: match b.scope {
                            GScope::Bucket(_, k) => Restrict::Bucket(k),
                            _ => Restrict::Anywhere,
                        },
                        via_group: None,
                    });
                }
            }
        }
        let human_by_email: BTreeMap<&str, u32> =
            self.humans.iter().enumerate().map(|(i, h)| (h.email.as_str(), i as u32)).collect();
        let sa_by_email: BTreeMap<&str, u32> =
            g.sas.iter().enumerate().map(|(i, s)| (s.email.as_str(), i as u32)).collect();
        let mut out = Vec::new();
        for ((p, m), grants) in map {
            let pid = &g.projects[p as usize].id;
            let (kind, email) = match m.split_once(':') {
                Some(("user", e)) => ("user", e.to_string()),
                Some((_, e)) => ("service_account", e.to_string()),
                None => continue,
            };
            let human = human_by_email.get(email.as_str()).copied();
            let sa = sa_by_email.get(email.as_str()).copied();
            let super_identity = grants
                .iter()
                .any(|gr| g.roles[gr.role as usize].name == "roles/owner" && gr.restrict == Restrict::Anywhere);
            out.push(Actor {
                cloud: Cl::Gcp,
                scope: p,
                uid: format!("gcp:projects/{pid}/{m}"),
                kind,
                name: email.clone(),
                principal_id: m.clone(),
                archetype: if human.is_some() { "human" } else { sa.map_or("", |s| g.sas[s as usize].archetype) },
                human,
                az: None,
                sa,
                email,
                grants,
                calls: Vec::new(),
                cum: Vec::new(),
                weight: 0.0,
                window: None,
                ips: Vec::new(),
                ua: 0,
                super_identity,
            });
        }
        self.actors.extend(out);
    }

    /// The calls each actor makes (granted, loggable, where its grants reach), its rate and the
    /// days it acts.
    fn habits(&mut self, spec: &MultiCloudSpec, rng: &mut ChaCha8Rng) {
        let days = spec.days;
        let mut any_active = false;
        for a in &mut self.actors {
            let mut calls: Vec<(u16, Restrict)> = Vec::new();
            match a.cloud {
                Cl::Azure => {
                    let sub = &self.azure.subs[a.scope as usize];
                    for (ci, op) in AZ_OPS.iter().enumerate() {
                        if !op.normal {
                            continue;
                        }
                        let Some(opi) = self.az_ix[ci] else { continue };
                        let mut best: Option<Restrict> = None;
                        for g in &a.grants {
                            if self.azure.roles[g.role as usize].set.control.binary_search(&opi).is_err() {
                                continue;
                            }
                            if !target_exists(sub, op.target, g.restrict) {
                                continue;
                            }
                            best = Some(match (best, g.restrict) {
                                (_, Restrict::Anywhere) | (Some(Restrict::Anywhere), _) => Restrict::Anywhere,
                                (Some(b), _) => b,
                                (None, r) => r,
                            });
                        }
                        if let Some(r) = best {
                            calls.push((ci as u16, r));
                        }
                    }
                }
                Cl::Gcp => {
                    for (ci, c) in GCP_CALLS.iter().enumerate() {
                        if !c.normal {
                            continue;
                        }
                        let Some(pi) = self.gcp_ix[ci] else { continue };
                        let mut best: Option<Restrict> = None;
                        for g in &a.grants {
                            if self.gcp.roles[g.role as usize].perms.binary_search(&pi).is_err() {
                                continue;
                            }
                            // a bucket-level grant only reaches that bucket's (and its objects') calls
                            if matches!(g.restrict, Restrict::Bucket(_))
                                && !matches!(c.target, GTarget::Bucket | GTarget::Object)
                            {
                                continue;
                            }
                            best = Some(match (best, g.restrict) {
                                (_, Restrict::Anywhere) | (Some(Restrict::Anywhere), _) => Restrict::Anywhere,
                                (Some(b), _) => b,
                                (None, r) => r,
                            });
                        }
                        if let Some(r) = best {
                            calls.push((ci as u16, r));
                        }
                    }
                }
            }
            // groups never act; most identities use a subset of what they may
            if a.kind == "group" {
                calls.clear();
            }
            calls.shuffle(rng);
            if !calls.is_empty() {
                let frac = rng.random_range(0.3..0.8);
                let k = ((calls.len() as f64 * frac).round() as usize).max(1);
                calls.truncate(k);
            }
            let mut acc = 0.0;
            a.cum = (0..calls.len())
                .map(|i| {
                    acc += 1.0 / ((i + 1) as f64).powf(1.1);
                    acc
                })
                .collect();
            a.calls = calls;
            let rate = match a.archetype {
                "human" => 1.0,
                "ci_deploy" | "data_pipeline" | "app" | "app_identity" => 4.0,
                _ => 2.0,
            };
            a.weight = rate * (1.0 / (1.0 - rng.random::<f64>()).max(1e-9)).powf(1.0 / 1.3).min(200.0);
            a.window = if rng.random_bool(0.15) {
                if days > LOOKBACK_DAYS + 2 && rng.random_bool(0.6) {
                    let to = rng.random_range(1..=days - LOOKBACK_DAYS - 1);
                    Some((rng.random_range(0..to), to))
                } else {
                    None
                }
            } else if rng.random_bool(0.3) {
                Some((rng.random_range(0..=days / 3), days))
            } else {
                Some((0, days))
            };
            any_active |= !a.calls.is_empty() && a.window.is_some_and(|(_, to)| to == days);
            let n_ips = rng.random_range(1..=2);
            a.ips = match a.human {
                Some(h) => self.humans[h as usize].ips.clone(),
                None => ips(rng, n_ips),
            };
            a.ua = rng.random_range(0..4);
        }
        if !any_active && let Some(a) = self.actors.iter_mut().find(|a| !a.calls.is_empty()) {
            a.window = Some((0, days));
        }
    }
}

fn target_exists(sub: &Sub, t: AzTarget, r: Restrict) -> bool {
    let kind = match t.kind() {
        Some(k) => k,
        // subscription- or resource-group-level targets: any grant at or above an RG reaches them
        None => return !matches!(r, Restrict::Res(_)),
    };
    sub.res.iter().enumerate().any(|(i, x)| {
        x.kind == kind
            && match r {
                Restrict::Anywhere | Restrict::Bucket(_) => true,
                Restrict::Rg(rg) => x.rg == rg,
                Restrict::Res(ri) => ri as usize == i,
            }
    })
}

fn unique(used: &mut BTreeSet<String>, base: String) -> String {
    let mut name = base.clone();
    let mut k = 2;
    while !used.insert(name.clone()) {
        name = format!("{base}-{k}");
        k += 1;
    }
    name
}

/// `first.last@…` → (first, last).
fn split_email(e: &str) -> Option<(String, String)> {
    let (local, _) = e.split_once('@')?;
    split_name(local)
}

/// `first.last` (no suffix) → (first, last).
fn split_name(n: &str) -> Option<(String, String)> {
    let (f, l) = n.split_once('.')?;
    let ok = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_lowercase());
    (ok(f) && ok(l)).then(|| (f.to_string(), l.to_string()))
}
