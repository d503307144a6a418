//! `grantwatch`: cloud entitlements, usage and permission creep, in one process over local files.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use std::sync::Arc;

use grantwatch::analyze::{AnalyzeOptions, run};
use grantwatch_core::catalog::Catalog;
use grantwatch_detect::ml::TrainParams;
use grantwatch_detect::stage::Detection;
use grantwatch_files::Input;
use grantwatch_s3::S3Config;
use grantwatch_types::EventTime;

/// mimalloc instead of glibc's allocator: with many reader threads allocating and freeing events and
/// RocksDB batches, glibc's per-thread arenas kept growing (measured: a 1M-event run's peak RSS fell
/// from ~550 MiB to ~330 MiB).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "grantwatch", version, about = "Cloud entitlements, their usage, and permission creep.")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args)]
struct ReportArgs {
    /// pci-history, permissions-analytics, identity, access-keys, groups, roles-policies, cross-account, alert.
    #[arg(value_parser = parse_kind)]
    kind: grantwatch_report::Kind,
    /// The state directory analyze kept (`analyze --state DIR`).
    #[arg(long)]
    state: PathBuf,
    /// analyze's output directory; default: the one the state records from the last analyze.
    #[arg(long)]
    results: Option<PathBuf>,
    /// Start of the window (event time, RFC 3339).
    #[arg(long, value_parser = parse_time)]
    from: Option<EventTime>,
    /// End of the window (event time, RFC 3339).
    #[arg(long, value_parser = parse_time)]
    to: Option<EventTime>,
    /// One identity: its ARN (or unique name). Required by `identity`.
    #[arg(long, conflicts_with = "account")]
    identity: Option<String>,
    /// One account (AWS account id, Azure subscription, GCP project).
    #[arg(long)]
    account: Option<String>,
    /// The alert to investigate (its uid in alerts.jsonl, or a unique prefix). Required by `alert`.
    #[arg(long)]
    alert: Option<String>,
    /// Where to write the report files.
    #[arg(long)]
    out: PathBuf,
    /// Formats, comma-separated: html, csv, json.
    #[arg(long, default_value = "html,csv,json")]
    format: String,
    /// Table rows per page in the HTML.
    #[arg(long, default_value_t = 100)]
    page_size: usize,
}

#[derive(clap::Args)]
struct ServeArgs {
    /// The state directory analyze keeps (`analyze --state DIR`); opened read-only per request.
    #[arg(long)]
    state: PathBuf,
    /// analyze's output directory; default: the one the state records (followed as analyze reruns).
    #[arg(long)]
    results: Option<PathBuf>,
    /// Address to listen on. Loopback by default: anything else exposes the view (with no login) to the
    /// network, and is warned about. Port 0 picks a free port (printed).
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: std::net::SocketAddr,
}

fn parse_kind(s: &str) -> Result<grantwatch_report::Kind, String> {
    grantwatch_report::Kind::parse(s).ok_or_else(|| {
        let all: Vec<&str> = grantwatch_report::Kind::ALL.iter().map(|k| k.as_str()).collect();
        format!("unknown report kind {s:?}: expected one of {}", all.join(", "))
    })
}

#[derive(Subcommand)]
enum Command {
    /// Evaluate IAM snapshots against CloudTrail usage and write findings.
    ///
    /// Exit status: 0 when all input was read, 3 when some input was quarantined (the run still
    /// completes and reports), 1 on an error that stopped the run.
    Analyze(Box<AnalyzeArgs>),
    /// Learn behavior models (per identity and per peer group) from CloudTrail history.
    Train(TrainArgs),
    /// Generate a labeled attack scenario: attack-free history, then days with attacks injected.
    Scenario(ScenarioArgs),
    /// Measure detection on a scenario (train unless --models, detect, score against the labels), or on
    /// a directory of labeled attack logs (--labeled: which techniques raise an alert on their records).
    Eval(EvalArgs),
    /// Generate a synthetic organization (IAM snapshots + CloudTrail) with its ground truth.
    Generate(GenerateArgs),
    /// Who can perform an action on a resource: every user and role allowed, directly or by assuming
    /// roles (the chain shown), with the statements that allow it and their conditions.
    WhoCan(WhoCanArgs),
    /// Right-size identities safely: `plan` (with a replay proof), `apply` (journaled), `rollback`.
    #[command(subcommand)]
    Remediate(RemediateCommand),
    /// Least-privilege policies from activity.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Journaled, reversible IAM changes: attach or detach a managed policy; export an account.
    #[command(subcommand)]
    Iam(IamCommand),
    /// Permissions on demand, through the access service: request, approve, deny, cancel, revoke, list,
    /// show.
    Access(Box<grantwatch::access_cli::AccessArgs>),
    /// A forensic report from the state and analyze's results: pci-history, permissions-analytics,
    /// identity, access-keys, groups, roles-policies, cross-account, alert (`docs/reports.md`).
    Report(ReportArgs),
    /// A read-only web view of the reports: identities (filters, pages), identity and alert pages, alerts,
    /// PCI trends, every report kind (`docs/reports.md`, "Web view").
    Serve(ServeArgs),
    /// Benchmark floor: only read, decompress and parse log files (CloudTrail, Azure, GCP, Okta,
    /// Workspace); print records/s.
    Floor {
        #[arg(long = "cloudtrail", alias = "logs", required = true, num_args = 1..)]
        cloudtrail: Vec<PathBuf>,
        #[arg(long)]
        threads: Option<usize>,
    },
}

#[derive(Subcommand)]
enum RemediateCommand {
    /// Plan the removal of permissions unused in the lookback; prove it by replaying the lookback's
    /// events against the snapshot as it would be after; write plan.json, after/ and a summary.
    Plan(Box<grantwatch::remediate::PlanArgs>),
    /// Execute a plan (a dry run without --yes), journaling every call before and after it.
    Apply(grantwatch::remediate_apply::ApplyArgs),
    /// Undo what a journal records, in reverse.
    Rollback(grantwatch::remediate_apply::RollbackArgs),
}

#[derive(Subcommand)]
enum PolicyCommand {
    /// Print a least-privilege policy from an identity's (or a group's members') activity.
    Generate(grantwatch::policy_generate::GenerateArgs),
}

#[derive(Subcommand)]
enum IamCommand {
    /// Attach a managed policy to a user, role or group (journaled; a dry run without --yes).
    Attach(grantwatch::remediate_apply::AttachArgs),
    /// Detach a managed policy from a user, role or group (journaled; a dry run without --yes).
    Detach(grantwatch::remediate_apply::AttachArgs),
    /// Export an account with GetAccountAuthorizationDetails, in the shape `--iam` reads.
    Export(grantwatch::remediate_apply::ExportArgs),
}

#[derive(clap::Args)]
struct WhoCanArgs {
    /// One IAM action, e.g. `s3:GetObject` (`sts:AssumeRole` with a role ARN: who can assume it).
    #[arg(long)]
    action: String,
    /// The resource ARN, e.g. `arn:aws:s3:::bucket/key`; `*` for actions without a resource type.
    #[arg(long)]
    resource: String,
    /// Output of `aws iam get-account-authorization-details` (files or directories; many accounts).
    #[arg(long, required = true, num_args = 1..)]
    iam: Vec<PathBuf>,
    /// AWS Organizations tree with its SCPs and RCPs (docs/organizations.md).
    #[arg(long)]
    organization: Option<PathBuf>,
    /// Resource-based policies (bucket, key, queue, topic, function, secret, repository policies;
    /// docs/access.md).
    #[arg(long = "resource-policies", num_args = 1..)]
    resource_policies: Vec<PathBuf>,
    #[arg(long, value_enum, default_value = "text")]
    format: FormatArg,
}

#[derive(Clone, Copy, ValueEnum)]
enum FormatArg {
    Text,
    Json,
}

#[derive(clap::Args)]
struct AnalyzeArgs {
    /// Output of `aws iam get-account-authorization-details` (files or directories; many accounts),
    /// and optionally `aws iam list-access-keys` output.
    #[arg(long, num_args = 1.., required_unless_present_any = ["azure", "gcp"])]
    iam: Vec<PathBuf>,
    /// Azure: role definitions and assignments (`az role ... list`), deny assignments, Entra users,
    /// groups and service principals (Microsoft Graph), the management-group tree and subscriptions,
    /// and Activity Log / Entra sign-in logs (docs/azure.md). Files or directories; each file is
    /// recognized by its content.
    #[arg(long, num_args = 1..)]
    azure: Vec<PathBuf>,
    /// GCP: IAM policies (Cloud Asset Inventory export or get-iam-policy output), custom roles, deny
    /// policies, service accounts and keys, and Cloud Audit Logs (docs/gcp.md).
    #[arg(long, num_args = 1..)]
    gcp: Vec<PathBuf>,
    /// Okta: users, groups, app assignments, factors, and System Log (docs/identity-providers.md).
    #[arg(long, num_args = 1..)]
    okta: Vec<PathBuf>,
    /// Google Workspace / Cloud Identity: users, groups, members, and Admin SDK Reports activities.
    #[arg(long, num_args = 1..)]
    workspace: Vec<PathBuf>,
    /// IAM Identity Center: users, groups, memberships, permission sets and account assignments.
    #[arg(long = "identity-center", num_args = 1..)]
    identity_center: Vec<PathBuf>,
    /// Which identities are one human (JSON, docs/identity-providers.md): overrides every other link.
    #[arg(long, value_name = "FILE")]
    humans: Option<PathBuf>,
    /// CloudTrail: S3-layout directory trees, `{"Records":[...]}` files (.json/.json.gz), JSON Lines,
    /// or `s3://bucket[/prefix]` to read the trail's bucket directly (local and S3 may be mixed).
    #[arg(long, num_args = 1.., value_parser = InputParser)]
    cloudtrail: Vec<Input>,
    #[command(flatten)]
    s3: S3Args,
    /// Evaluate as of this time (RFC 3339). Default: the latest event time in state.
    #[arg(long, value_parser = parse_time)]
    as_of: Option<EventTime>,
    /// Usage older than this many days before --as-of does not count as use.
    #[arg(long, default_value_t = 90)]
    lookback_days: u32,
    /// Keep usage state (RocksDB) in this directory between runs. Default: a temporary directory.
    #[arg(long)]
    state: Option<PathBuf>,
    /// Directory for identities.jsonl, accounts.json, ingest_report.json (and quarantine.jsonl).
    #[arg(long, default_value = "out")]
    out: PathBuf,
    /// Active identities using less than this share of their granted actions are over-provisioned.
    #[arg(long, default_value_t = 0.10)]
    over_provisioned_threshold: f64,
    /// Identities granted at least this share of the catalog's actions, on every resource and without
    /// condition, are super identities (0.95 counts AWS's PowerUserAccess in; 0.99 leaves it out).
    #[arg(long, default_value_t = grantwatch_core::findings::SUPER_IDENTITY_SHARE)]
    super_identity_share: f64,
    /// AWS Organizations tree with its SCPs and RCPs (one JSON file, see docs/organizations.md): an
    /// action they deny or do not allow is not granted to the accounts below them.
    #[arg(long, value_name = "FILE")]
    organization: Option<PathBuf>,
    /// Resource-based policies (bucket, key, queue, topic, function, secret, repository policies;
    /// docs/access.md): they grant within the account, and their public and cross-account access is
    /// listed in resource_access.jsonl.
    #[arg(long = "resource-policies", value_name = "FILE", num_args = 1..)]
    resource_policies: Vec<PathBuf>,
    /// Name every action in identities.jsonl's action lists. Default: the compact form, where
    /// `prefix:*` stands for every action of a service (and `*` for all), with the exact counts beside.
    #[arg(long)]
    exact_actions: bool,
    /// Reader threads (default: one per core).
    #[arg(long)]
    threads: Option<usize>,
    /// Identity shards: threads running usage, PCI and detection, each for its share of identities
    /// (default: one per core). The output is the same whatever the number.
    #[arg(long)]
    shards: Option<usize>,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
    /// Pending usage writes that trigger a state flush (bounds memory).
    #[arg(long, default_value_t = 250_000, hide = true)]
    flush_budget: usize,
    /// Test hook: abort right after this many state flushes (simulates kill -9).
    #[arg(long, hide = true)]
    crash_after_flushes: Option<u32>,
    #[command(flatten)]
    detect: DetectArgs,
    /// Skip detection (no alerts.jsonl).
    #[arg(long)]
    no_detect: bool,
    /// The access service's audit log (JSON Lines, optionally gzipped): permissions granted on demand.
    /// A call within a grant's window is expected (no first-time or model alert; an alert it raises
    /// names the request); a use right after a grant ended, or a grant to the same identity made outside
    /// grantwatch, is an alert. Lines that are not audit events are quarantined (exit status 3).
    #[arg(long = "access-log", value_name = "FILE", num_args = 1..)]
    access_log: Vec<PathBuf>,
    #[command(flatten)]
    limits: LimitArgs,
}

/// What bad or hostile input may cost, and how far event times may stray (defaults in the help).
#[derive(clap::Args)]
struct LimitArgs {
    /// Quarantine a record whose event time is more than this many hours after its delivery (the
    /// time in a CloudTrail S3 object's name, else the file's modification time).
    #[arg(long, default_value_t = 24)]
    max_clock_skew_hours: u32,
    /// Quarantine a record whose event time is more than this many days before the delivery time in
    /// its CloudTrail S3 object's name.
    #[arg(long, default_value_t = 30)]
    max_delivery_delay_days: u32,
    /// Quarantine a record (a Records element or a JSON Lines line) longer than this many bytes; the
    /// rest of its file is still read.
    #[arg(long, default_value_t = grantwatch_files::DEFAULT_MAX_RECORD)]
    max_record_bytes: u64,
    /// Stop reading a file (and quarantine it) when it inflates past this many bytes.
    #[arg(long, default_value_t = grantwatch_files::DEFAULT_MAX_DECOMPRESSED)]
    max_file_bytes: u64,
    /// Events held for event-time reordering at most (memory bound); beyond, events count as late.
    #[arg(long, default_value_t = grantwatch_runtime::DEFAULT_REORDER_CAPACITY)]
    reorder_capacity: usize,
    /// Quarantined records copied into quarantine.jsonl per input file, at most (all are counted).
    #[arg(long, default_value_t = 100)]
    quarantine_copies_per_file: u64,
}

/// How to reach S3 for `s3://` inputs. Credentials come only from the AWS SDK's default chain
/// (environment, profile, web identity, ECS/EC2 metadata); they are never logged.
#[derive(clap::Args)]
struct S3Args {
    /// An S3-compatible endpoint instead of AWS's (e.g. http://127.0.0.1:9000); AWS_ENDPOINT_URL is
    /// honoured too. Buckets are then addressed by path.
    #[arg(long, value_name = "URL")]
    s3_endpoint_url: Option<String>,
    /// The bucket's region. Default: the SDK's chain (AWS_REGION, the profile).
    #[arg(long, value_name = "REGION")]
    s3_region: Option<String>,
}

impl S3Args {
    fn config(&self) -> S3Config {
        S3Config { endpoint_url: self.s3_endpoint_url.clone(), region: self.s3_region.clone() }
    }
}

#[derive(clap::Args)]
struct DetectArgs {
    /// Rules directory: Sigma rules (*.yml, any depth) and grantwatch.toml (per-analytic settings).
    /// Default: ./rules when it exists, else the built-in analytics only.
    #[arg(long)]
    rules: Option<PathBuf>,
    /// Model directory written by `grantwatch train`. Default: none (the ML analytics are off).
    #[arg(long)]
    models: Option<PathBuf>,
}

#[derive(clap::Args)]
struct ScenarioArgs {
    #[arg(long)]
    out: PathBuf,
    #[arg(long, default_value_t = 7)]
    seed: u64,
    #[arg(long, default_value_t = 1000)]
    identities: u32,
    #[arg(long, default_value_t = 3)]
    accounts: u32,
    /// Attack-free days before the attacks (training and lookback).
    #[arg(long, default_value_t = 21)]
    history_days: u32,
    /// Days with attacks injected.
    #[arg(long, default_value_t = 7)]
    detect_days: u32,
    #[arg(long, default_value_t = 14)]
    attacks_per_technique: u32,
}

#[derive(clap::Args)]
#[command(group(clap::ArgGroup::new("input").required(true).args(["scenario", "labeled"])))]
struct EvalArgs {
    /// A scenario directory written by `grantwatch scenario`.
    #[arg(long)]
    scenario: Option<PathBuf>,
    /// A directory of labeled attack logs instead: one technique per file, named by the file (Stratus
    /// Red Team's detonation logs have this shape). Each file is replayed on its own; a technique is
    /// detected when an alert names its records.
    #[arg(long, conflicts_with = "scenario")]
    labeled: Option<PathBuf>,
    /// With --labeled: the techniques that must be detected for exit status 0 (default: all).
    #[arg(long, requires = "labeled")]
    min_detected: Option<usize>,
    /// Rules directory.
    #[arg(long, default_value = "rules")]
    rules: PathBuf,
    /// Use these trained models instead of training on the scenario's history.
    #[arg(long)]
    models: Option<PathBuf>,
    /// Also write the report as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

#[derive(clap::Args)]
struct TrainArgs {
    /// CloudTrail history to learn from (same forms as `analyze --cloudtrail`, `s3://` included).
    #[arg(long, required = true, num_args = 1.., value_parser = InputParser)]
    cloudtrail: Vec<Input>,
    #[command(flatten)]
    s3: S3Args,
    /// Where to write manifest.json and model.json.
    #[arg(long, default_value = "models")]
    out: PathBuf,
    #[command(flatten)]
    detect: DetectArgs,
    /// Peer groups (k of k-means).
    #[arg(long, default_value_t = 8)]
    peer_groups: usize,
    /// Seed of the clustering.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

#[derive(Clone, Copy, ValueEnum)]
enum LayoutArg {
    S3,
    Jsonl,
}

#[derive(clap::Args)]
struct GenerateArgs {
    #[arg(long, default_value_t = 1)]
    seed: u64,
    #[arg(long, default_value_t = 3)]
    accounts: u32,
    #[arg(long, default_value_t = 40)]
    identities: u32,
    #[arg(long, default_value_t = 120)]
    days: u32,
    #[arg(long, default_value_t = 100_000)]
    events: u64,
    #[arg(long, value_enum, default_value = "s3")]
    layout: LayoutArg,
    /// Minutes of events per S3 file (a real trail delivers every ~5 minutes).
    #[arg(long, default_value_t = 5)]
    file_minutes: u32,
    /// Regions to spread activity over (comma-separated). Default: the generator's.
    #[arg(long, value_delimiter = ',')]
    regions: Vec<String>,
    /// Also Azure subscriptions, GCP projects and identity providers (Okta, Google Workspace, IAM
    /// Identity Center) with this many humans: a multi-cloud organization whose truth.json covers
    /// every cloud and who is who. --accounts, --layout, --file-minutes and --regions then shape
    /// its AWS part; --events counts the Azure and GCP records.
    #[arg(long, value_name = "HUMANS")]
    multicloud: Option<u32>,
    /// With --multicloud: Azure subscriptions.
    #[arg(long, default_value_t = 2)]
    subscriptions: u32,
    /// With --multicloud: GCP projects.
    #[arg(long, default_value_t = 2)]
    projects: u32,
    /// With --multicloud: CloudTrail events of the AWS part.
    #[arg(long, default_value_t = 50_000)]
    aws_events: u64,
    #[arg(long)]
    out: PathBuf,
}

/// Loads the rules and model directories named on the command line (the same loader the detector uses).
fn load_detection(args: &DetectArgs, out: &mut impl Write) -> Result<Arc<Detection>> {
    let catalog = Catalog::all_clouds_shared().context("loading the action catalog")?;
    let default_rules = PathBuf::from("rules");
    let rules_dir = match &args.rules {
        Some(dir) => Some(dir.clone()),
        None => default_rules.is_dir().then_some(default_rules),
    };
    let (detection, loaded) = match &rules_dir {
        Some(dir) => grantwatch_detect::load::load_detection(catalog, dir, args.models.as_deref())
            .with_context(|| format!("loading detection from {}", dir.display()))?,
        None => {
            writeln!(out, "No rules directory (./rules or --rules): built-in analytics only.")?;
            let empty = tempfile::tempdir()?;
            grantwatch_detect::load::load_detection(catalog, empty.path(), args.models.as_deref())?
        }
    };
    for e in &loaded.sigma_errors {
        writeln!(out, "warning: Sigma rule skipped: {e}")?;
    }
    if let Some(m) = &loaded.model {
        writeln!(out, "Model: {m}")?;
    }
    Ok(Arc::new(detection))
}

/// `s3://bucket[/prefix]`, or a local path (taken as given, even when not UTF-8, which a `&str`
/// parser could not do).
#[derive(Clone)]
struct InputParser;

impl clap::builder::TypedValueParser for InputParser {
    type Value = Input;

    fn parse_ref(
        &self,
        _cmd: &clap::Command,
        _arg: Option<&clap::Arg>,
        value: &std::ffi::OsStr,
    ) -> Result<Input, clap::Error> {
        Input::parse(value).map_err(|e| clap::Error::raw(clap::error::ErrorKind::ValueValidation, format!("{e}\n")))
    }
}

fn parse_time(s: &str) -> Result<EventTime, String> {
    EventTime::parse_rfc3339(s).ok_or_else(|| format!("not an RFC 3339 time: {s:?} (e.g. 2026-11-01T00:00:00Z)"))
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("GRANTWATCH_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    match real_main() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn real_main() -> Result<ExitCode> {
    let cli = Cli::parse();
    let mut stdout = std::io::stdout().lock();
    match cli.command {
        Command::Analyze(a) => {
            let mut opts = AnalyzeOptions::new(a.out);
            opts.iam = a.iam;
            opts.cloudtrail = a.cloudtrail;
            opts.clouds = grantwatch::clouds::CloudPaths {
                azure: a.azure,
                gcp: a.gcp,
                okta: a.okta,
                workspace: a.workspace,
                identity_center: a.identity_center,
                humans: a.humans,
            };
            opts.s3 = a.s3.config();
            opts.as_of = a.as_of;
            opts.lookback_days = a.lookback_days;
            opts.state = a.state;
            opts.over_provisioned_ratio = a.over_provisioned_threshold;
            anyhow::ensure!(
                a.super_identity_share > 0.0 && a.super_identity_share <= 1.0,
                "--super-identity-share must be above 0 and at most 1 (got {})",
                a.super_identity_share
            );
            opts.super_identity_share = a.super_identity_share;
            opts.exact_actions = a.exact_actions;
            opts.organization = a.organization;
            opts.resource_policies = a.resource_policies;
            opts.threads = a.threads;
            opts.shards = a.shards;
            opts.progress = !a.quiet;
            opts.flush_budget = a.flush_budget.max(1);
            opts.crash_after_flushes = a.crash_after_flushes;
            let l = &a.limits;
            opts.time_bounds.max_ahead_ms = i64::from(l.max_clock_skew_hours) * 3_600_000;
            opts.time_bounds.max_behind_ms = i64::from(l.max_delivery_delay_days) * 86_400_000;
            opts.read.max_record = l.max_record_bytes.max(1);
            opts.read.max_decompressed = l.max_file_bytes.max(1);
            opts.reorder_capacity = l.reorder_capacity.max(1);
            opts.quarantine_copies_per_file = l.quarantine_copies_per_file;
            if !a.no_detect {
                opts.detection = Some(load_detection(&a.detect, &mut stdout)?);
            }
            opts.access_logs = a.access_log;
            let outcome = run(&opts)?;
            grantwatch::output::write_summary(&mut stdout, &outcome)?;
            let secs = outcome.elapsed.as_secs_f64();
            writeln!(
                stdout,
                "Took {:.2} s ({:.0} records/s), peak RSS {}",
                secs,
                outcome.ingest.records_read as f64 / secs.max(1e-9),
                outcome.peak_rss.map_or_else(|| "unknown".to_string(), |b| format!("{} MiB", b / (1 << 20)))
            )?;
            Ok(if outcome.quarantined_anything() { ExitCode::from(3) } else { ExitCode::SUCCESS })
        }
        Command::Train(t) => {
            let started = std::time::Instant::now();
            let detection = load_detection(&DetectArgs { rules: t.detect.rules.clone(), models: None }, &mut stdout)?;
            let params = TrainParams { peer_groups: t.peer_groups, seed: t.seed, ..TrainParams::default() };
            let manifest = grantwatch::train::train(detection, &t.cloudtrail, &t.s3.config(), &params, &t.out)?;
            grantwatch::train::write_manifest_summary(&mut stdout, &manifest, &t.out)?;
            writeln!(stdout, "Took {:.1} s", started.elapsed().as_secs_f64())?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Scenario(a) => {
            let cfg = grantwatch_synth::scenario::ScenarioConfig {
                seed: a.seed,
                identities: a.identities,
                accounts: a.accounts,
                history_days: a.history_days,
                detect_days: a.detect_days,
                attacks_per_technique: a.attacks_per_technique,
                ..Default::default()
            };
            let started = std::time::Instant::now();
            let summary = grantwatch_synth::scenario::generate(&cfg, &a.out).context("generating the scenario")?;
            writeln!(
                stdout,
                "Scenario in {} ({:.1} s): {} identities, {} + {} days, {} history events, {} detection events, {} attacks",
                a.out.display(),
                started.elapsed().as_secs_f64(),
                summary.identities,
                cfg.history_days,
                cfg.detect_days,
                summary.history_events,
                summary.detect_events,
                summary.techniques.values().sum::<u32>()
            )?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Eval(a) => {
            let started = std::time::Instant::now();
            if let Some(dir) = a.labeled {
                let r = grantwatch::eval::run_labeled(&grantwatch::eval::LabeledOptions {
                    dir,
                    rules: a.rules,
                    models: a.models,
                })?;
                write!(stdout, "{r}")?;
                if let Some(path) = a.json {
                    std::fs::write(&path, serde_json::to_vec_pretty(&r)?)
                        .with_context(|| format!("writing {}", path.display()))?;
                }
                writeln!(stdout, "Took {:.1} s", started.elapsed().as_secs_f64())?;
                let pass = r.detected >= a.min_detected.unwrap_or(r.total);
                return Ok(if pass { ExitCode::SUCCESS } else { ExitCode::from(4) });
            }
            let Some(scenario) = a.scenario else { anyhow::bail!("--scenario or --labeled is required") };
            let o = grantwatch::eval::run(&grantwatch::eval::EvalOptions {
                scenario,
                rules: a.rules,
                models: a.models,
                train: TrainParams::default(),
            })?;
            if let Some(m) = &o.trained {
                grantwatch::train::write_manifest_summary(&mut stdout, m, &o.models)?;
            }
            writeln!(
                stdout,
                "Detection: {} events, {} alerts ({} grouped repeats), {} identity-hours scored; alerts in {}\n",
                o.pass.events,
                o.pass.counts.alerts,
                o.pass.counts.repeats,
                o.pass.counts.windows_scored,
                o.alerts.display()
            )?;
            write!(stdout, "{}", o.report)?;
            if let Some(path) = a.json {
                std::fs::write(&path, serde_json::to_vec_pretty(&o.report)?)
                    .with_context(|| format!("writing {}", path.display()))?;
            }
            writeln!(stdout, "Took {:.1} s", started.elapsed().as_secs_f64())?;
            Ok(if o.report.pass { ExitCode::SUCCESS } else { ExitCode::from(4) })
        }
        Command::Generate(g) => {
            let layout = match g.layout {
                LayoutArg::S3 => grantwatch_synth::Layout::S3,
                LayoutArg::Jsonl => grantwatch_synth::Layout::JsonLines,
            };
            let mut spec = grantwatch_synth::OrgSpec::new(g.seed, g.accounts, g.identities, g.days, g.events, layout);
            spec.file_minutes = g.file_minutes;
            if !g.regions.is_empty() {
                spec.regions = g.regions;
            }
            let started = std::time::Instant::now();
            if let Some(humans) = g.multicloud {
                let mut mc = grantwatch_synth::MultiCloudSpec::new(
                    g.seed,
                    g.subscriptions,
                    g.projects,
                    humans,
                    g.identities,
                    g.days,
                    g.events,
                );
                spec.events = g.aws_events;
                mc.aws = spec;
                let truth =
                    grantwatch_synth::generate_multicloud(&mc, &g.out).context("generating the organization")?;
                let m = &truth.multicloud;
                writeln!(
                    stdout,
                    "Generated {} CloudTrail events, {} Azure and {} GCP records and {} identity-provider events for {} AWS and {} Azure/GCP identities ({} humans) in {} in {:.1} s; ground truth in {}",
                    truth.aws.events,
                    m.azure_records,
                    m.gcp_records,
                    m.okta_events + m.workspace_events,
                    truth.aws.identities.len(),
                    m.identities.len(),
                    m.humans.len(),
                    g.out.display(),
                    started.elapsed().as_secs_f64(),
                    g.out.join("truth.json").display()
                )?;
                return Ok(ExitCode::SUCCESS);
            }
            let truth = grantwatch_synth::generate(&spec, &g.out).context("generating the organization")?;
            let secs = started.elapsed().as_secs_f64();
            writeln!(
                stdout,
                "Generated {} events for {} identities in {} in {:.1} s ({:.0} events/s); ground truth in {}",
                truth.events,
                truth.identities.len(),
                g.out.display(),
                secs,
                truth.events as f64 / secs.max(1e-9),
                g.out.join("truth.json").display()
            )?;
            Ok(ExitCode::SUCCESS)
        }
        Command::WhoCan(w) => {
            let inputs = grantwatch::access::AccessInputs {
                iam: w.iam,
                organization: w.organization,
                resource_policies: w.resource_policies,
            };
            let started = std::time::Instant::now();
            let loaded = grantwatch::access::load(&inputs)?;
            let catalog = Catalog::aws().context("loading the AWS action catalog")?;
            let model = grantwatch_core::access::AccessModel::new(
                &loaded.snapshot,
                &loaded.resource_policies,
                loaded.organization.as_ref(),
            );
            let loaded_in = started.elapsed();
            let report = grantwatch::access::who_can(&model, &catalog, &w.action, &w.resource)?;
            tracing::info!(
                load_ms = loaded_in.as_millis() as u64,
                query_ms = (started.elapsed() - loaded_in).as_millis() as u64,
                identities = report.identities.len(),
                "who-can answered."
            );
            match w.format {
                FormatArg::Json => writeln!(stdout, "{}", serde_json::to_string_pretty(&report)?)?,
                FormatArg::Text => grantwatch::access::render_text(&report, &mut stdout)?,
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Remediate(RemediateCommand::Plan(a)) => grantwatch::remediate::plan_cmd(&a),
        Command::Remediate(RemediateCommand::Apply(a)) => grantwatch::remediate_apply::apply_cmd(&a),
        Command::Remediate(RemediateCommand::Rollback(a)) => grantwatch::remediate_apply::rollback_cmd(&a),
        Command::Policy(PolicyCommand::Generate(a)) => grantwatch::policy_generate::generate_cmd(&a),
        Command::Iam(IamCommand::Attach(a)) => grantwatch::remediate_apply::attach_cmd(&a, true),
        Command::Iam(IamCommand::Detach(a)) => grantwatch::remediate_apply::attach_cmd(&a, false),
        Command::Iam(IamCommand::Export(a)) => grantwatch::remediate_apply::export_cmd(&a),
        Command::Access(a) => grantwatch::access_cli::run(&a, &mut stdout),
        Command::Report(a) => {
            let opts = grantwatch::report::ReportOptions {
                kind: a.kind,
                state: a.state,
                results: a.results,
                filters: grantwatch_report::Filters {
                    from: a.from,
                    to: a.to,
                    identity: a.identity,
                    account: a.account,
                    alert: a.alert,
                    ..Default::default()
                },
                out: a.out,
                formats: grantwatch::report::Format::parse_list(&a.format)?,
                page_size: a.page_size,
            };
            let o = grantwatch::report::run(&opts)?;
            for f in &o.files {
                writeln!(stdout, "{}", f.display())?;
            }
            writeln!(
                stdout,
                "{} report: load {:.3} s, build {:.3} s, render {:.3} s",
                a.kind.as_str(),
                o.load.as_secs_f64(),
                o.build.as_secs_f64(),
                o.render.as_secs_f64()
            )?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Serve(a) => {
            if !grantwatch::serve::is_loopback(&a.listen) {
                tracing::warn!(listen = %a.listen, "Listening beyond the loopback: anyone who can reach it can read every identity and alert (there is no login).");
                eprintln!(
                    "warning: --listen {} is not a loopback address: the web view has no login, so anyone who can \
                     reach it can read every identity, entitlement and alert",
                    a.listen
                );
            }
            let rt =
                tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the runtime")?;
            rt.block_on(async {
                let listener = tokio::net::TcpListener::bind(a.listen)
                    .await
                    .with_context(|| format!("listening on {}", a.listen))?;
                let addr = listener.local_addr()?;
                writeln!(stdout, "grantwatch serve: http://{addr}/ (state {}, read-only)", a.state.display())?;
                stdout.flush()?;
                let opts = grantwatch::serve::ServeOptions { state: a.state, results: a.results };
                grantwatch::serve::serve(listener, opts, async {
                    let _ = tokio::signal::ctrl_c().await;
                })
                .await
                .context("serving")
            })?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Floor { cloudtrail, threads } => {
            let o = grantwatch::floor::run(&cloudtrail, threads)?;
            let secs = o.elapsed.as_secs_f64();
            writeln!(
                stdout,
                "floor: {} files, {} records ({} unparsable), {:.2} s, {:.0} records/s, peak RSS {} MiB",
                o.files,
                o.records,
                o.parse_errors,
                secs,
                o.records as f64 / secs.max(1e-9),
                grantwatch::rss::peak_rss_bytes().unwrap_or(0) / (1 << 20)
            )?;
            Ok(ExitCode::SUCCESS)
        }
    }
}
