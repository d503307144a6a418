//! The inputs beyond AWS (`docs/multi-cloud.md`): Azure and GCP exports and logs, Okta, Google
//! Workspace and IAM Identity Center directories and logs, and the human mapping file. `analyze` and
//! `grantwatch-ingest` (`kafka::ingest`) load them here, so both publish the same entitlements.
//!
//! Each path given to `--azure`, `--gcp`, `--okta`, `--workspace` or `--identity-center` is a file or
//! a directory walked for `.json`, `.jsonl`, `.ndjson` (optionally `.gz`). Each file is sorted by its
//! content: an activity log (its first records carry a log's keys, `grantwatch_core::shape`) joins the
//! activity inputs, read with CloudTrail by the same runner; anything else is an export of that
//! source, read whole (up to [`EXPORT_MAX_BYTES`]) and parsed by the source's module. A file that is
//! neither stops the run naming it: a skipped export would understate every entitlement in it.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use grantwatch_core::azure;
use grantwatch_core::catalog::Catalog;
use grantwatch_core::gcp;
use grantwatch_core::humans::{HumanLinker, Mapping};
use grantwatch_core::idp::identity_center::{IdentityCenter, SsoRoleMatcher};
use grantwatch_core::idp::okta::OktaDirectory;
use grantwatch_core::idp::workspace::WorkspaceDirectory;
use grantwatch_core::policy::IdentityGrants;
use grantwatch_types::{Cloud, Escalation, IdentityKind};

/// Why the exports could not be loaded: what was being read, and the cause.
#[derive(Debug)]
pub struct CloudsError {
    pub what: String,
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl std::fmt::Display for CloudsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.source {
            Some(source) => write!(f, "{}: {source}", self.what),
            None => f.write_str(&self.what),
        }
    }
}

impl std::error::Error for CloudsError {}

type Result<T, E = CloudsError> = std::result::Result<T, E>;

/// `.with_context(...)` for this module's results, as `anyhow` spells it.
trait Context<T> {
    fn with_context(self, what: impl FnOnce() -> String) -> Result<T>;
    fn context(self, what: &str) -> Result<T>;
}

impl<T, E: Into<Box<dyn std::error::Error + Send + Sync>>> Context<T> for std::result::Result<T, E> {
    fn with_context(self, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|e| CloudsError { what: what(), source: Some(e.into()) })
    }
    fn context(self, what: &str) -> Result<T> {
        self.with_context(|| what.to_string())
    }
}

impl<T> Context<T> for Option<T> {
    fn with_context(self, what: impl FnOnce() -> String) -> Result<T> {
        self.ok_or_else(|| CloudsError { what: what(), source: None })
    }
    fn context(self, what: &str) -> Result<T> {
        self.with_context(|| what.to_string())
    }
}

macro_rules! bail {
    ($($arg:tt)*) => {
        return Err(CloudsError { what: format!($($arg)*), source: None })
    };
}

/// The largest export read (decompressed): exports are read whole, logs are streamed.
pub const EXPORT_MAX_BYTES: u64 = 2 << 30;
/// How much of a file is looked at to tell a log from an export.
const PEEK_BYTES: u64 = 64 << 10;

/// The paths given on the command line.
#[derive(Debug, Clone, Default)]
pub struct CloudPaths {
    pub azure: Vec<PathBuf>,
    pub gcp: Vec<PathBuf>,
    pub okta: Vec<PathBuf>,
    pub workspace: Vec<PathBuf>,
    pub identity_center: Vec<PathBuf>,
    /// The human mapping file (`docs/identity-providers.md`).
    pub humans: Option<PathBuf>,
}

impl CloudPaths {
    /// The export and log paths of every source (not the mapping file).
    pub fn sources(&self) -> impl Iterator<Item = &PathBuf> {
        self.azure.iter().chain(&self.gcp).chain(&self.okta).chain(&self.workspace).chain(&self.identity_center)
    }

    pub fn is_empty(&self) -> bool {
        self.azure.is_empty()
            && self.gcp.is_empty()
            && self.okta.is_empty()
            && self.workspace.is_empty()
            && self.identity_center.is_empty()
            && self.humans.is_none()
    }
}

/// What the other clouds and the directories add to a run.
pub struct CloudInputs {
    /// Azure and GCP identities (one per principal and subscription or project).
    pub grants: Vec<IdentityGrants>,
    /// Activity log files found among the paths, for the file runner.
    pub logs: Vec<PathBuf>,
    /// GCP resources anyone can reach.
    pub public: Vec<gcp::PublicExposure>,
    /// The Okta org of the directory export, for the System Log's uids.
    pub okta_org: Option<String>,
    pub export_files: u64,
    pub warnings: Vec<String>,
    okta: OktaDirectory,
    workspace: WorkspaceDirectory,
    identity_center: IdentityCenter,
    mapping: Option<Mapping>,
}

/// Reads every export and sorts out the logs.
pub fn load(paths: &CloudPaths, catalog: &Catalog) -> Result<CloudInputs> {
    let mut out = CloudInputs {
        grants: Vec::new(),
        logs: Vec::new(),
        public: Vec::new(),
        okta_org: None,
        export_files: 0,
        warnings: Vec::new(),
        okta: OktaDirectory::new(),
        workspace: WorkspaceDirectory::new(),
        identity_center: IdentityCenter::new(),
        mapping: None,
    };

    let mut azure_inv = azure::AzureInventory::new();
    for (path, bytes) in exports(&paths.azure, &mut out.logs)? {
        let export = azure::parse_export(&bytes).with_context(|| format!("reading Azure export {}", path.display()))?;
        azure_inv.add(export);
        out.export_files += 1;
    }
    if !azure_inv.is_empty() {
        let found = azure::evaluate(&azure_inv, catalog).context("evaluating Azure role assignments")?;
        out.warnings.extend(found.warnings);
        out.grants.extend(found.grants);
    }

    let mut gcp_inv = gcp::GcpInventory::default();
    for (path, bytes) in exports(&paths.gcp, &mut out.logs)? {
        let name = path.display().to_string();
        let inv = gcp::parse_export(&name, &bytes).with_context(|| format!("reading GCP export {name}"))?;
        gcp_inv.extend(inv);
        out.export_files += 1;
    }
    if !gcp_inv.is_empty() {
        let found = gcp::entitlements(&gcp_inv, catalog);
        out.warnings.extend(found.warnings);
        out.public = found.public;
        let mut grants = found.identities;
        escalate_gcp(&gcp_inv, &mut grants, catalog);
        out.grants.extend(grants);
    }
    for g in &mut out.grants {
        let why = match g.cloud {
            Cloud::Azure => azure::is_admin(g, catalog),
            Cloud::Gcp => gcp::is_admin(g, catalog),
            _ => None,
        };
        if let Some(why) = why {
            g.escalation = Some(Arc::new(Escalation {
                admin: Some(why.clone()),
                path: Vec::new(),
                administrator: g.arn.clone(),
                administrator_reason: why,
                conditional: false,
            }));
        }
    }

    for (path, bytes) in exports(&paths.okta, &mut out.logs)? {
        let skipped = out.okta.add_bytes(&bytes).with_context(|| format!("reading Okta export {}", path.display()))?;
        note_skipped(&mut out.warnings, &path, skipped.iter().map(ToString::to_string));
        out.export_files += 1;
    }
    if !out.okta.org().is_empty() {
        out.okta_org = Some(out.okta.org().to_string());
    }
    for (path, bytes) in exports(&paths.workspace, &mut out.logs)? {
        let skipped = out
            .workspace
            .add_bytes(&bytes)
            .with_context(|| format!("reading Google Workspace export {}", path.display()))?;
        note_skipped(&mut out.warnings, &path, skipped.iter().map(ToString::to_string));
        out.export_files += 1;
    }
    for (path, bytes) in exports(&paths.identity_center, &mut out.logs)? {
        let skipped = out
            .identity_center
            .add_bytes(&bytes)
            .with_context(|| format!("reading IAM Identity Center export {}", path.display()))?;
        note_skipped(&mut out.warnings, &path, skipped.iter().map(ToString::to_string));
        out.export_files += 1;
    }
    if let Some(file) = &paths.humans {
        let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
        out.mapping =
            Some(Mapping::parse(&bytes).with_context(|| format!("reading human mapping {}", file.display()))?);
    }
    out.logs.sort();
    out.logs.dedup();
    Ok(out)
}

impl CloudInputs {
    /// Joins identities into humans: every identity (AWS's too) by its addresses, Identity Center
    /// users to the `AWSReservedSSO_*` roles of the AWS snapshot, the mapping file over all. Sets each
    /// identity's `human`.
    pub fn link_humans(&mut self, grants: &mut [IdentityGrants]) -> HumanLinker {
        let sso_roles = SsoRoleMatcher::new(
            grants.iter().filter(|g| g.cloud == Cloud::Aws && g.kind == IdentityKind::Role).map(|g| g.arn.as_str()),
        );
        let mut builder = HumanLinker::builder()
            .okta(std::mem::take(&mut self.okta))
            .workspace(std::mem::take(&mut self.workspace))
            .identity_center(std::mem::take(&mut self.identity_center))
            .sso_roles(sso_roles);
        // Only users are people: a service account's address (`sa@p.iam.gserviceaccount.com`) or a
        // group's names no human, however many projects share it. The mapping file may still give
        // a workload to its owner, by uid.
        fn addresses(g: &IdentityGrants) -> &[String] {
            if g.kind == IdentityKind::User { &g.emails } else { &[] }
        }
        for g in grants.iter() {
            builder = builder.identity(&g.arn, addresses(g));
        }
        if let Some(m) = self.mapping.take() {
            builder = builder.mapping(m);
        }
        let linker = builder.build();
        for g in grants.iter_mut() {
            g.human = linker.human_of_identity(&g.arn, addresses(g)).map(str::to_string);
        }
        linker
    }
}

fn note_skipped(warnings: &mut Vec<String>, path: &Path, skipped: impl Iterator<Item = String>) {
    for (i, why) in skipped.enumerate() {
        if i == 100 {
            warnings.push(format!("{}: more records skipped", path.display()));
            break;
        }
        warnings.push(format!("{}: {why}", path.display()));
    }
}

/// A GCP identity that can act as an administrator service account (`actAs`, `getAccessToken`, ...)
/// can become one: the one-step escalation paths of GCP's impersonation edges.
fn escalate_gcp(inv: &gcp::GcpInventory, grants: &mut [IdentityGrants], catalog: &Catalog) {
    let edges = gcp::impersonation_edges(inv, grants, catalog);
    let admins: rustc_hash::FxHashMap<String, String> =
        grants.iter().filter_map(|g| gcp::is_admin(g, catalog).map(|why| (g.arn.clone(), why))).collect();
    let mut paths: rustc_hash::FxHashMap<String, (String, String, String)> = rustc_hash::FxHashMap::default();
    for (from, to, permission) in edges {
        if from == to || admins.contains_key(&from) {
            continue;
        }
        if let Some(why) = admins.get(&to) {
            paths.entry(from).or_insert((to, permission, why.clone()));
        }
    }
    for g in grants.iter_mut() {
        if let Some((to, permission, why)) = paths.remove(&g.arn) {
            g.escalation = Some(Arc::new(Escalation {
                admin: None,
                path: vec![grantwatch_types::EscalationStep {
                    from: g.arn.clone(),
                    to: to.clone(),
                    kind: "impersonate-service-account".to_string(),
                    actions: vec![permission],
                    conditional: false,
                    policies: Vec::new(),
                }],
                administrator: to,
                administrator_reason: why,
                conditional: false,
            }));
        }
    }
}

/// The exports among `paths` (read whole), the logs pushed to `logs`.
fn exports(paths: &[PathBuf], logs: &mut Vec<PathBuf>) -> Result<Vec<(PathBuf, Vec<u8>)>> {
    if paths.is_empty() {
        return Ok(Vec::new());
    }
    let found = grantwatch_files::discover(paths).context("finding export and log files")?;
    if let Some((path, why)) = found.unreadable.first() {
        bail!("cannot read {}: {why}", path.display());
    }
    let mut out = Vec::new();
    for f in found.files {
        let path = f.local_path().context("exports and logs of other clouds are local files")?.to_path_buf();
        if is_log_file(&path)? {
            logs.push(path);
            continue;
        }
        let bytes = read_decompressed(&path, EXPORT_MAX_BYTES + 1)?;
        if bytes.len() as u64 > EXPORT_MAX_BYTES {
            bail!("{}: export larger than {} bytes", path.display(), EXPORT_MAX_BYTES);
        }
        out.push((path, bytes));
    }
    Ok(out)
}

/// Whether the file is an activity log (its first records carry a log's keys) rather than an export:
/// the rule [`load`] sorts files by.
pub fn is_log_file(path: &Path) -> Result<bool> {
    Ok(looks_like_log(&read_decompressed(path, PEEK_BYTES)?))
}

/// Whether a file's first bytes are an activity log's: one of its first records has a log's keys.
fn looks_like_log(head: &[u8]) -> bool {
    use grantwatch_core::shape::RecordShape;
    let has = |key: &[u8]| memchr::memmem::find(head, key).is_some();
    // `RecordShape` defaults to CloudTrail: require the key that makes it one.
    match RecordShape::of(head) {
        RecordShape::CloudTrail => has(b"\"eventSource\""),
        _ => true,
    }
}

/// The file's bytes, gunzipped when gzip, at most `max`.
fn read_decompressed(path: &Path, max: u64) -> Result<Vec<u8>> {
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut reader = std::io::BufReader::new(file);
    let gzip = {
        use std::io::BufRead;
        let head = reader.fill_buf().with_context(|| format!("reading {}", path.display()))?;
        head.starts_with(&[0x1f, 0x8b])
    };
    let mut out = Vec::new();
    let res = if gzip {
        flate2::bufread::MultiGzDecoder::new(reader).take(max).read_to_end(&mut out)
    } else {
        reader.take(max).read_to_end(&mut out)
    };
    match res {
        Ok(_) => Ok(out),
        // A peek may stop inside a gzip member: what was inflated is enough to look at.
        Err(_) if max == PEEK_BYTES && !out.is_empty() => Ok(out),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}
