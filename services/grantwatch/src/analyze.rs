//! `grantwatch analyze`: IAM snapshots and CloudTrail files in, findings and alerts out.
//!
//! 1. Parse the IAM snapshots and evaluate every identity's effective permissions.
//! 2. One pass over the CloudTrail files with the runtime's file runner
//!    ([`grantwatch_runtime::file_run`]): every record read and normalized once, on every core; usage,
//!    PCI and detection in event-time order; state, finished files and the alert file's committed
//!    length written in one atomic batch. A killed run restarts where its last commit left off.
//! 3. Compute findings as of the given time (default: the latest event time in state) and write them.
//!
//! With `--state`, a later run reads only new files and appends its alerts to the same
//! `alerts.jsonl` (detection's history and open incidents live in the state too); without it, state is
//! a temporary directory and every run covers its whole input.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use grantwatch_core::access::AccessModel;
use grantwatch_core::catalog::Catalog;
use grantwatch_core::cloudtrail::{ActionMap, Normalizer};
use grantwatch_core::findings::{AccountRollup, FindingsConfig, for_each_subject_batch_capped, identity_finding_as};
use grantwatch_core::iam::IamSnapshot;
use grantwatch_core::org::Organization;
use grantwatch_core::policy::{IdentityGrants, evaluate};
use grantwatch_core::processor::ProcessorConfig;
use grantwatch_core::time_guard::TimeBounds;
use grantwatch_core::usage::all_events_span;
use grantwatch_detect::stage::{DetectCounts, Detection};
use grantwatch_files::{Input, QuarantineWriter, ReadOptions};
use grantwatch_runtime::file_run::{self, AlertSink, FileRunOptions, FileRunOutcome, NoAlerts, Progress};
use grantwatch_runtime::pipeline::PipelineConfig;
use grantwatch_s3::S3Config;
use grantwatch_state::StateRead;
use grantwatch_state_rocks::RocksStore;
use grantwatch_types::{
    AccountsReport, ActionsForm, EventTime, IdentityFinding, IngestReport, Quarantined, UnmappedCall,
};

use crate::output::{AlertFile, Outputs};

/// Options of one `analyze` run.
#[derive(Debug, Clone)]
pub struct AnalyzeOptions {
    pub iam: Vec<PathBuf>,
    /// Local paths and `s3://bucket[/prefix]`s, mixed as the user likes.
    pub cloudtrail: Vec<Input>,
    /// Azure, GCP and identity-provider exports and logs (`crate::clouds`).
    pub clouds: crate::clouds::CloudPaths,
    /// How to reach S3 for the `s3://` inputs (credentials: the SDK's default chain only).
    pub s3: S3Config,
    pub as_of: Option<EventTime>,
    pub lookback_days: u32,
    /// Keep usage state here between runs; a temporary directory when absent.
    pub state: Option<PathBuf>,
    pub out: PathBuf,
    pub over_provisioned_ratio: f64,
    /// See `FindingsConfig::super_identity_share`.
    pub super_identity_share: f64,
    /// AWS Organizations tree and SCPs/RCPs (`docs/organizations.md`): the ceiling of every account's
    /// grants.
    pub organization: Option<PathBuf>,
    /// Resource-based policies (`docs/access.md`): same-account grants, cross-account and public
    /// access in `resource_access.jsonl`.
    pub resource_policies: Vec<PathBuf>,
    /// Write every action of the four action lists of `identities.jsonl` (else the compact form).
    pub exact_actions: bool,
    /// Pending state writes that trigger a commit (bounds memory).
    pub flush_budget: usize,
    pub threads: Option<usize>,
    /// Identity shards (default: one per core).
    pub shards: Option<usize>,
    pub progress: bool,
    /// Fault injection for the crash-restart test: abort the process (as `kill -9` would end it) right
    /// after this many state commits.
    pub crash_after_flushes: Option<u32>,
    /// Detection (rules, anomalies, models) into `alerts.jsonl`; `None`: no detection.
    pub detection: Option<Arc<Detection>>,
    /// The access service's audit logs (JSON Lines): permissions granted on demand, which detection
    /// judges the calls against (`docs/access-on-demand.md`, Detection).
    pub access_logs: Vec<PathBuf>,
    /// How far event times may stray from their delivery before records are quarantined.
    pub time_bounds: TimeBounds,
    /// Limits of the file reader (decompressed size, record size).
    pub read: ReadOptions,
    /// Events held for event-time reordering at most.
    pub reorder_capacity: usize,
    /// Quarantined records copied per input file, at most (all are counted).
    pub quarantine_copies_per_file: u64,
}

impl AnalyzeOptions {
    pub fn new(out: PathBuf) -> Self {
        Self {
            iam: Vec::new(),
            cloudtrail: Vec::new(),
            clouds: crate::clouds::CloudPaths::default(),
            s3: S3Config::default(),
            as_of: None,
            lookback_days: 90,
            state: None,
            out,
            over_provisioned_ratio: 0.10,
            super_identity_share: grantwatch_core::findings::SUPER_IDENTITY_SHARE,
            exact_actions: false,
            organization: None,
            resource_policies: Vec::new(),
            flush_budget: 250_000,
            threads: None,
            shards: None,
            progress: true,
            crash_after_flushes: None,
            detection: None,
            access_logs: Vec::new(),
            time_bounds: TimeBounds::default(),
            read: ReadOptions::default(),
            reorder_capacity: grantwatch_runtime::DEFAULT_REORDER_CAPACITY,
            quarantine_copies_per_file: 100,
        }
    }
}

/// What detection did in a run.
#[derive(Debug, Default)]
pub struct PassOutcome {
    /// Events processed in event-time order.
    pub events: u64,
    /// Of those, processed after a later one.
    pub late: u64,
    pub pci_updates: u64,
    /// Alerts written (incident openings and updates).
    pub alerts_written: u64,
    pub counts: DetectCounts,
    pub windows: Vec<grantwatch_detect::ml::TrainingWindow>,
}

impl PassOutcome {
    pub(crate) fn of(run: &mut FileRunOutcome) -> Option<PassOutcome> {
        let counts = run.detect.clone()?;
        Some(PassOutcome {
            events: run.counts.counted + run.counts.duplicates,
            late: run.counts.late,
            pci_updates: run.counts.pci_updates,
            alerts_written: run.alerts_written,
            counts,
            windows: std::mem::take(&mut run.windows),
        })
    }
}

/// What a run produced, for the summary and for tests.
#[derive(Debug)]
pub struct AnalyzeOutcome {
    pub ingest: IngestReport,
    pub accounts: AccountsReport,
    /// The identities with the highest PCI (at most 20), for the summary table.
    pub top: Vec<IdentityFinding>,
    pub identities: usize,
    pub outputs: Outputs,
    pub elapsed: std::time::Duration,
    pub peak_rss: Option<u64>,
    /// Detection, when it ran; alerts are in `outputs.alerts`.
    pub detection: Option<PassOutcome>,
    /// The escalation graph's figures.
    pub escalation: grantwatch_core::escalation::EscalationSummary,
    /// Entries of `resource_access.jsonl`.
    pub resource_access: usize,
    /// Humans linked (`humans.jsonl`), and of them those with identities in two clouds or more.
    pub humans: (usize, usize),
}

impl AnalyzeOutcome {
    pub fn quarantined_anything(&self) -> bool {
        self.ingest.files_quarantined > 0 || self.ingest.records_quarantined > 0
    }
}

/// Runs `analyze`.
pub fn run(opts: &AnalyzeOptions) -> Result<AnalyzeOutcome> {
    let started = std::time::Instant::now();
    crate::output::create_out_dir(&opts.out)?;
    let catalog = Catalog::all_clouds_shared().context("loading the action catalog")?;

    // 1. Entitlements: AWS, then Azure and GCP, then who is who across them.
    let mut iam = load_iam(&opts.iam, &catalog)?;
    let mut clouds = crate::clouds::load(&opts.clouds, &catalog)?;
    for w in &clouds.warnings {
        tracing::warn!(warning = %w, "Cloud export issue.");
    }
    let org = match &opts.organization {
        Some(file) => Some(Arc::new(crate::access::read_organization(file)?)),
        None => None,
    };
    let resource_policies = crate::access::read_resource_policies(&opts.resource_policies)?;
    let Entitlements { mut grants, model, escalation } = finish_entitlements(
        std::mem::take(&mut iam.grants),
        &iam.snapshot,
        &catalog,
        org.as_deref(),
        &resource_policies,
        opts.super_identity_share,
    );
    let resource_access = grantwatch_core::access::resource_access(&model);
    drop(model);
    let resource_access_count = resource_access.len();
    grants.append(&mut clouds.grants);
    grants.sort_by(|a, b| a.arn.cmp(&b.arn));
    let humans = Arc::new(clouds.link_humans(&mut grants));
    // Events name the person behind their actor, so alerts do.
    let human_index = grantwatch_core::humans::HumanIndex::new(
        Arc::clone(&humans),
        grants.iter().filter_map(|g| Some((g.arn.clone(), g.human.clone()?))),
    );
    let normalizer =
        Normalizer::new(ActionMap::new(Arc::clone(&catalog)).context("loading the CloudTrail action map")?)
            .with_okta_org(clouds.okta_org.clone())
            .with_humans(Some(Arc::new(human_index)));
    let mut logs = opts.cloudtrail.clone();
    logs.extend(clouds.logs.iter().cloned().map(Input::Local));

    // 2. State, and one pass over the activity logs.
    let temp_state;
    let state_dir: &Path = match &opts.state {
        Some(d) => d,
        None => {
            temp_state = tempfile::Builder::new()
                .prefix("grantwatch-state-")
                .tempdir()
                .context("creating a temporary state dir")?;
            temp_state.path()
        }
    };
    let store = RocksStore::open(state_dir).with_context(|| format!("opening state dir {}", state_dir.display()))?;
    let quarantine_path = opts.out.join("quarantine.jsonl");
    let quarantine = QuarantineWriter::new(quarantine_path.clone());
    let mut outputs = Outputs::new(&opts.out);
    let mut access_file = crate::output::JsonLinesWriter::create(&outputs.resource_access)?;
    for entry in &resource_access {
        access_file.write(entry)?;
    }
    // GCP resources bound to allUsers / allAuthenticatedUsers: public, like a `*` principal.
    for p in &clouds.public {
        access_file.write(&grantwatch_types::ResourceAccess {
            resource: p.resource.clone(),
            account: p.project.clone().unwrap_or_default(),
            access: "public".to_string(),
            principal: p.member.clone(),
            external: true,
            actions: vec![p.role.clone()],
            condition: p.conditional.then(|| serde_json::json!({ "gcp": "the binding carries an IAM condition" })),
            policy: format!("iam-policy:{}", p.resource),
            statement: 0,
        })?;
    }
    access_file.finish()?;
    let resource_access_count = resource_access_count + clouds.public.len();
    let mut report = IngestReport {
        iam_snapshots_read: iam.files + clouds.export_files,
        identities: grants.len() as u64,
        ..Default::default()
    };
    let access = match (&opts.detection, opts.access_logs.is_empty()) {
        (_, true) => None,
        (Some(d), false) => Some(crate::ondemand::read(
            &opts.access_logs,
            d.config.detection.on_demand_limits(),
            &opts.read,
            &quarantine,
        )),
        (None, false) => {
            tracing::warn!("--access-log is only read for detection: ignored with --no-detect.");
            None
        }
    };
    let on_demand = access.as_ref().map(|a| Arc::new(a.grants.clone()));

    let mut run_outcome = FileRunOutcome::default();
    if !logs.is_empty() {
        let mut alert_file = match &opts.detection {
            Some(_) => {
                let path = opts.out.join("alerts.jsonl");
                let f = AlertFile::open(&path, &store)?;
                outputs.alerts = Some(path);
                Some(f)
            }
            None => None,
        };
        let bar = crate::output::progress_bar(opts.progress, 0);
        let progress = |p: Progress| match p {
            Progress::Total(n) => bar.set_length(n),
            Progress::File(n) => bar.inc(n),
        };
        let run_opts = FileRunOptions {
            cloudtrail: &logs,
            s3: opts.s3.clone(),
            catalog: catalog.clone(),
            normalizer: &normalizer,
            detection: opts.detection.clone(),
            // Always: the processor scores every identity as windows close, for the PCI history.
            grants: grants.iter().cloned().map(Arc::new).collect(),
            on_demand,
            pipeline: PipelineConfig {
                processor: ProcessorConfig {
                    lookback_days: opts.lookback_days,
                    over_provisioned_ratio: opts.over_provisioned_ratio,
                    super_identity_share: opts.super_identity_share,
                    organization: org.clone(),
                    // Windows close (and the PCI history is written) with or without detection.
                    emit_windows: true,
                    ..ProcessorConfig::default()
                },
                // Windows close in event-time order, detection or not: the PCI history needs it.
                reorder_capacity: opts.reorder_capacity,
                shards: opts.shards.unwrap_or(0),
                ..PipelineConfig::default()
            },
            time_bounds: opts.time_bounds,
            read: opts.read,
            flush_budget: opts.flush_budget,
            threads: opts.threads.unwrap_or(0),
            quarantine_copies_per_file: opts.quarantine_copies_per_file,
            // A scratch state (no --state) holds no marks: nothing to look up, no file times to note.
            skip_ingested: opts.state.is_some(),
            crash_after_commits: opts.crash_after_flushes,
            progress: &progress,
        };
        let sink: &mut dyn AlertSink = match &mut alert_file {
            Some(f) => f,
            None => &mut NoAlerts,
        };
        run_outcome = file_run::run(&run_opts, &store, &quarantine, sink).context("reading the activity logs")?;
        bar.finish_and_clear();
        if let Some(f) = alert_file {
            f.finish()?;
        }
        tracing::info!(rocksdb_memory_bytes = store.memory_bytes(), "Ingest finished.");
    }
    fill_report(&mut report, &mut run_outcome);
    if let Some(a) = access {
        report.access_events_read = a.events;
        report.files_quarantined += a.files_quarantined;
        report.records_quarantined += a.records_quarantined;
        report.quarantined.extend(a.quarantined);
    }
    let qc = quarantine.counts();
    report.quarantine_file = (qc.files + qc.records > 0).then(|| quarantine_path.display().to_string());

    // 3. Findings.
    let span = all_events_span(&store)?;
    report.first_event = span.map(|s| EventTime(s.first_ms));
    report.last_event = span.map(|s| EventTime(s.last_ms));
    let as_of = match (opts.as_of, span) {
        (Some(t), _) => t,
        (None, Some(s)) => EventTime(s.last_ms),
        (None, None) => {
            // IAM only (a common first step): nothing is used. Evaluate as of the snapshot's newest
            // identity, so that the report carries a meaningful date.
            tracing::info!("No activity logs: every granted permission is reported unused.");
            iam.newest_identity.unwrap_or_default()
        }
    };
    let mut cfg = FindingsConfig::new(as_of);
    cfg.lookback_days = opts.lookback_days;
    cfg.over_provisioned_ratio = opts.over_provisioned_ratio;
    cfg.super_identity_share = opts.super_identity_share;
    let (accounts, top, identities, humans) = write_findings(
        &catalog,
        &cfg,
        &grants,
        &store,
        &outputs,
        &report,
        FindingsShape {
            form: if opts.exact_actions { ActionsForm::Exact } else { ActionsForm::Compact },
            org: org.as_deref(),
            humans: &humans,
        },
    )?;
    // Where this run's results are, for `grantwatch report --state` (which reads identities.jsonl and
    // alerts.jsonl next to the history).
    if opts.state.is_some() {
        let out = std::path::absolute(&opts.out).unwrap_or_else(|_| opts.out.clone());
        let mut batch = grantwatch_state::WriteBatch::new();
        batch.put(
            grantwatch_state::Table::Meta,
            grantwatch_state::keys::RESULTS_DIR.prefix.to_vec(),
            out.to_string_lossy().as_bytes().to_vec(),
        );
        grantwatch_state::StateStore::write(&store, batch).context("recording the results directory in state")?;
    }
    Ok(AnalyzeOutcome {
        ingest: report,
        accounts,
        top,
        identities,
        outputs,
        elapsed: started.elapsed(),
        peak_rss: crate::rss::peak_rss_bytes(),
        detection: PassOutcome::of(&mut run_outcome),
        escalation,
        resource_access: resource_access_count,
        humans,
    })
}

fn fill_report(report: &mut IngestReport, run: &mut FileRunOutcome) {
    report.files_already_ingested = run.files_already_ingested;
    report.files_read = run.files_read;
    report.files_quarantined = run.files_quarantined;
    report.records_read = run.records;
    report.records_quarantined = run.records_quarantined;
    report.non_api_records = run.non_api_records;
    report.duplicates = run.counts.duplicates;
    report.events_counted = run.counts.counted;
    report.no_permission_events = run.counts.no_permission;
    report.unmapped_events = run.counts.unmapped.values().sum();
    let mut unmapped: Vec<UnmappedCall> = std::mem::take(&mut run.counts.unmapped)
        .into_iter()
        .map(|((service, operation), count)| UnmappedCall { service, operation, count })
        .collect();
    unmapped.sort_by(|a, b| {
        b.count.cmp(&a.count).then_with(|| (&a.service, &a.operation).cmp(&(&b.service, &b.operation)))
    });
    report.unmapped_calls = unmapped;
    report.records_time_refused = run.records_time_refused;
    report.quarantine_copies_left_out = run.quarantine_copies_left_out;
    report.quarantined = std::mem::take(&mut run.quarantined);
    // Unlistable paths are bad input too: named in the report, counted, and the run went on.
    report.paths_skipped = run.skipped_paths.len() as u64;
    for (path, reason) in std::mem::take(&mut run.skipped_paths) {
        report.quarantined.push(Quarantined { file: path, record: None, reason });
    }
}

/// Identities whose usage is read from state at once.
const FINDINGS_BATCH: usize = 256;

/// How findings are written: the form of their action lists, and the Organizations policies that
/// cap the identities only the logs name.
struct FindingsShape<'a> {
    form: ActionsForm,
    org: Option<&'a Organization>,
    /// Who is who across clouds: `humans.jsonl` is rolled up from the findings as they are written.
    humans: &'a grantwatch_core::humans::HumanLinker,
}

/// What `write_findings` wrote: the accounts report, the top identities, how many identities, and
/// (humans, humans with identities in two clouds or more).
type Written = (AccountsReport, Vec<IdentityFinding>, usize, (usize, usize));

fn write_findings(
    catalog: &Catalog,
    cfg: &FindingsConfig,
    grants: &[IdentityGrants],
    store: &dyn StateRead,
    outputs: &Outputs,
    report: &IngestReport,
    shape: FindingsShape<'_>,
) -> Result<Written> {
    let FindingsShape { form, org, humans } = shape;
    let mut identities_w = outputs.identities_writer()?;
    let mut human_report = grantwatch_core::humans::HumanReport::new(humans);
    let mut rollup = AccountRollup::default();
    let mut top: Vec<IdentityFinding> = Vec::new();
    let mut n = 0usize;
    let mut write_err = None;
    // Built and written one at a time, in ARN order. (Building them on every core was measured: no
    // faster, the time goes to writing half a gigabyte for 5,000 identities, and twice the memory.)
    let cap = |g: &mut IdentityGrants| {
        if let Some(org) = org {
            org.apply(catalog, std::slice::from_mut(g));
        }
    };
    for_each_subject_batch_capped(catalog, grants, store, FINDINGS_BATCH, &cap, &mut |subjects| {
        for (g, usage) in subjects {
            let f = identity_finding_as(catalog, cfg, g, usage, form);
            n += 1;
            rollup.add(&f);
            human_report.add(&f);
            if write_err.is_none()
                && let Err(e) = identities_w.write(&f)
            {
                write_err = Some(e);
            }
            crate::output::keep_top(&mut top, f, 20);
        }
    })?;
    if let Some(e) = write_err {
        return Err(e);
    }
    identities_w.finish()?;
    let mut humans_w = crate::output::JsonLinesWriter::create(&outputs.humans)?;
    let mut humans = (0, 0);
    for h in human_report.finish() {
        let clouds: std::collections::BTreeSet<_> = h.identities.iter().map(|i| i.cloud).collect();
        humans.0 += 1;
        humans.1 += usize::from(clouds.len() >= 2);
        humans_w.write(&h)?;
    }
    humans_w.finish()?;
    let accounts = rollup.finish(cfg);
    outputs.write_json(&outputs.accounts, &accounts)?;
    outputs.write_json(&outputs.ingest_report, report)?;
    Ok((accounts, top, n, humans))
}

/// Every identity's effective permissions, with what the request-level model and the escalation
/// graph add: the Organizations ceiling applied, reachable actions and escalation paths filled in.
pub struct Entitlements {
    pub grants: Vec<IdentityGrants>,
    pub model: AccessModel,
    pub escalation: grantwatch_core::escalation::EscalationSummary,
}

/// [`Entitlements`] of a snapshot, as `analyze` computes them.
pub fn entitlements(
    snapshot: &IamSnapshot,
    catalog: &Catalog,
    org: Option<&Organization>,
    resource_policies: &[grantwatch_core::access::ResourcePolicy],
    share: f64,
) -> Entitlements {
    finish_entitlements(evaluate(snapshot, catalog), snapshot, catalog, org, resource_policies, share)
}

fn finish_entitlements(
    mut grants: Vec<IdentityGrants>,
    snapshot: &IamSnapshot,
    catalog: &Catalog,
    org: Option<&Organization>,
    resource_policies: &[grantwatch_core::access::ResourcePolicy],
    share: f64,
) -> Entitlements {
    if let Some(org) = org {
        for (account, n) in org.apply(catalog, &mut grants) {
            tracing::info!(account, actions_removed = n, "Organizations policies applied.");
        }
    }
    let started = std::time::Instant::now();
    let model = AccessModel::new(snapshot, resource_policies, org);
    let escalation = grantwatch_core::escalation::apply(&model, catalog, &mut grants, share);
    tracing::info!(
        elapsed_ms = started.elapsed().as_millis() as u64,
        edges = escalation.edges,
        administrators = escalation.administrators,
        escalate = escalation.escalate,
        "Escalation graph built."
    );
    Entitlements { grants, model, escalation }
}

/// Entitlements from IAM snapshots.
pub struct Iam {
    pub snapshot: IamSnapshot,
    pub grants: Vec<IdentityGrants>,
    /// Snapshot files read.
    pub files: u64,
    /// The newest creation time of a user, role or group (the snapshot is at least that recent).
    pub newest_identity: Option<EventTime>,
}

/// Reads IAM snapshots (files or directories) and evaluates every identity's effective permissions.
/// Returns them with the number of snapshot files read.
pub fn load_grants(iam: &[PathBuf], catalog: &Catalog) -> Result<(Vec<IdentityGrants>, u64)> {
    let i = load_iam(iam, catalog)?;
    Ok((i.grants, i.files))
}

/// [`load_grants`], with what else the snapshots say.
pub fn load_iam(iam: &[PathBuf], catalog: &Catalog) -> Result<Iam> {
    let (snapshot, iam_files) = load_snapshot(iam)?;
    let grants = evaluate(&snapshot, catalog);
    tracing::info!(identities = grants.len(), files = iam_files, "Entitlements evaluated.");
    let newest_identity = snapshot
        .users
        .iter()
        .map(|u| u.created)
        .chain(snapshot.roles.iter().map(|r| r.created))
        .chain(snapshot.groups.iter().map(|g| g.created))
        .flatten()
        .max();
    Ok(Iam { snapshot, grants, files: iam_files, newest_identity })
}

/// Reads and merges IAM snapshot files (or directories of them). Returns the snapshot and the number
/// of files read. A file that cannot be read or parsed stops the load, naming it: a skipped snapshot
/// would understate the entitlements of every identity in it.
pub fn load_snapshot(iam: &[PathBuf]) -> Result<(IamSnapshot, u64)> {
    let mut snapshot = IamSnapshot::default();
    let mut iam_files = 0u64;
    let found = grantwatch_files::discover(iam).context("finding IAM snapshot files")?;
    if let Some((path, why)) = found.unreadable.first() {
        bail!("cannot read IAM snapshot path {}: {why}", path.display());
    }
    for f in found.files {
        let path = f.local_path().context("IAM snapshots are local files")?;
        let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        let doc = grantwatch_core::iam::parse_iam_json(&bytes, &path.display().to_string())
            .with_context(|| format!("parsing IAM snapshot {}", path.display()))?;
        snapshot.merge(doc);
        iam_files += 1;
    }
    for w in &snapshot.warnings {
        tracing::warn!(warning = %w, "IAM snapshot issue.");
    }
    Ok((snapshot, iam_files))
}
