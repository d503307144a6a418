//! `grantwatch policy generate`: a least-privilege IAM policy from an identity's activity (or a group's
//! members'), read from CloudTrail on every core (`grantwatch_runtime::scan`) and built by
//! `grantwatch_core::policygen` (`docs/policy-generation.md`). The policy goes to stdout or `--out`;
//! the summary and the warnings (unmapped calls, unreadable input, size limits) to stderr.
//!
//! `--replay` reads the logs a second time and evaluates every successful call of the window against
//! the generated policy (and against `--replay-policy` files, e.g. another tool's), with the request
//! evaluator (`access::AccessModel`): the generated policy must deny none.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result, bail};

use grantwatch_core::catalog::Catalog;
use grantwatch_core::cloudtrail::{ActionMap, Normalizer};
use grantwatch_core::iam::{IamSnapshot, PolicyDocument, arn_account, parse_policy_document};
use grantwatch_core::policygen::{
    Accumulator, Config, DEFAULT_LOOKBACK_DAYS, DEFAULT_MAX_ARNS, DEFAULT_MAX_SCOPES, Generated, PolicyGenerator,
    ReplayCounts, ResourceMode, replay_model,
};
use grantwatch_core::remediate::MANAGED_POLICY_MAX_CHARS;
use grantwatch_files::{Input, ReadOptions};
use grantwatch_runtime::scan::{Prefilter, ScanCounts, for_each_event_where};
use grantwatch_s3::S3Config;
use grantwatch_types::EventTime;

/// IAM's limit on a role's inline policies, in characters without whitespace.
const ROLE_INLINE_MAX_CHARS: usize = 10_240;

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum ResourcesArg {
    /// The resource ARNs seen, generalized when lists get long; `*` only for actions without a
    /// resource type.
    Scoped,
    /// `*` for every action.
    Any,
}

#[derive(clap::Args, Debug)]
pub struct GenerateArgs {
    /// The user or role (`arn:aws:iam::123456789012:role/name`), or a group (with --iam: the policy
    /// its members' activity needs).
    #[arg(long)]
    pub identity: String,
    /// CloudTrail: S3-layout directory trees, `{"Records":[...]}` files (.json/.json.gz), JSON Lines,
    /// or `s3://bucket[/prefix]`.
    #[arg(long, required = true, num_args = 1..)]
    pub cloudtrail: Vec<PathBuf>,
    /// Days of activity before the window's end that count.
    #[arg(long, default_value_t = DEFAULT_LOOKBACK_DAYS)]
    pub lookback_days: u32,
    /// The window's end (RFC 3339). Default: the identity's latest event in the logs.
    #[arg(long, value_parser = parse_time)]
    pub as_of: Option<EventTime>,
    /// How resources are written.
    #[arg(long, value_enum, default_value = "scoped")]
    pub resources: ResourcesArg,
    /// IAM snapshots (`get-account-authorization-details`): needed to know a group's members.
    #[arg(long, num_args = 1..)]
    pub iam: Vec<PathBuf>,
    /// Write the policy here (replaced atomically) instead of stdout.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// More ARNs than this of one resource type under one root (a bucket, `role/`), or more roots
    /// than this in one service, region and account, become one pattern.
    #[arg(long, default_value_t = DEFAULT_MAX_ARNS)]
    pub max_arns: usize,
    /// More (region, account) pairs than this for one action and service become one pattern for the
    /// service (the memory bound of last resort).
    #[arg(long, default_value_t = DEFAULT_MAX_SCOPES)]
    pub max_scopes: usize,
    /// Reader threads (default: one per core).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Read the logs again and evaluate every successful call of the window against the policy;
    /// print the counts on stderr (exit status 4 if the generated policy denies any).
    #[arg(long)]
    pub replay: bool,
    /// Also replay the window's calls against these policy documents (another tool's output).
    #[arg(long, num_args = 1.., hide = true)]
    pub replay_policy: Vec<PathBuf>,
    /// An S3-compatible endpoint for `s3://` inputs.
    #[arg(long, value_name = "URL")]
    pub s3_endpoint_url: Option<String>,
    /// The bucket's region for `s3://` inputs.
    #[arg(long, value_name = "REGION")]
    pub s3_region: Option<String>,
}

fn parse_time(s: &str) -> Result<EventTime, String> {
    EventTime::parse_rfc3339(s).ok_or_else(|| format!("not an RFC 3339 time: {s:?} (e.g. 2026-11-01T00:00:00Z)"))
}

/// What `policy generate` produced (the tests call [`run`] directly).
#[derive(Debug)]
pub struct Outcome {
    pub generated: Generated,
    /// The policy as printed.
    pub json: String,
    /// The identities whose activity counted (the identity, or the group's members).
    pub identities: Vec<String>,
    pub scan: ScanCounts,
    /// Replays: ("generated" or the file's path, counts), when asked.
    pub replays: Vec<(String, ReplayCounts)>,
    pub seconds: f64,
    pub replay_seconds: f64,
}

pub fn generate_cmd(a: &GenerateArgs) -> Result<ExitCode> {
    let outcome = run(a)?;
    let mut err = std::io::stderr().lock();
    report(&mut err, a, &outcome)?;
    match &a.out {
        Some(path) => write_atomically(path, outcome.json.as_bytes())?,
        None => {
            let mut out = std::io::stdout().lock();
            out.write_all(outcome.json.as_bytes())?;
            out.flush()?;
        }
    }
    if let Some((_, c)) = outcome.replays.first()
        && c.denied > 0
    {
        writeln!(err, "error: the generated policy denies {} replayed calls", c.denied)?;
        return Ok(ExitCode::from(4));
    }
    let unreadable = !outcome.scan.bad_files.is_empty() || outcome.scan.bad_records > 0;
    Ok(if unreadable { ExitCode::from(3) } else { ExitCode::SUCCESS })
}

/// Generates (and replays, when asked) without printing.
pub fn run(a: &GenerateArgs) -> Result<Outcome> {
    let started = Instant::now();
    let identities = identities(a)?;
    let inputs: Vec<Input> =
        a.cloudtrail.iter().map(|p| Input::parse(p.as_os_str()).map_err(anyhow::Error::msg)).collect::<Result<_>>()?;
    let s3 = S3Config { endpoint_url: a.s3_endpoint_url.clone(), region: a.s3_region.clone() };
    let catalog = Arc::new(Catalog::aws().context("loading the AWS action catalog")?);
    let normalizer = Normalizer::new(ActionMap::new(catalog.clone()).context("loading the CloudTrail action map")?);
    let cfg = Config {
        max_arns: a.max_arns.max(1),
        max_scopes: a.max_scopes.max(1),
        resources: match a.resources {
            ResourcesArg::Scoped => ResourceMode::Scoped,
            ResourcesArg::Any => ResourceMode::Any,
        },
        lookback_days: a.lookback_days,
        as_of: a.as_of,
    };
    let generator = PolicyGenerator::new(&catalog, identities.iter().cloned(), cfg);
    let threads = a.threads.unwrap_or(0);
    // Only records naming one of the identities are parsed: most of a trail is others' activity.
    let prefilter = Prefilter::for_identities(identities.iter().map(String::as_str));
    let (scan, accs) = for_each_event_where(
        &inputs,
        &s3,
        &normalizer,
        ReadOptions::default(),
        threads,
        &|raw| prefilter.keeps(raw),
        Accumulator::default,
        |acc, ev| generator.visit(acc, ev),
    )
    .context("reading CloudTrail")?;
    let mut acc = Accumulator::default();
    for other in accs {
        generator.merge(&mut acc, other);
    }
    let generated = generator.finish(&acc);
    let seconds = started.elapsed().as_secs_f64();
    let who = who(a, &identities);
    let Some((start, end)) = generated.window else {
        bail!(
            "no event of {who} in the CloudTrail read ({} files, {} events){}",
            scan.files,
            scan.events,
            a.as_of.map(|t| format!(" at or before {}", t.to_rfc3339())).unwrap_or_default()
        );
    };
    if generated.policy.statements.is_empty() {
        bail!(
            "{who} made no successful call needing a permission between {} and {}: nothing to allow",
            start.to_rfc3339(),
            end.to_rfc3339()
        );
    }
    let json = serde_json::to_string_pretty(&generated.policy)? + "\n";
    // The output must be a policy document IAM (and grantwatch) reads back as generated.
    let value: serde_json::Value = serde_json::from_str(&json)?;
    let parsed = parse_policy_document(&value, "generated policy", "", false)
        .map_err(|e| anyhow::anyhow!("the generated policy does not parse back: {e}"))?;
    if parsed != generated.policy.document() {
        bail!("the generated policy does not parse back to itself");
    }

    let mut replays = Vec::new();
    let replay_started = Instant::now();
    if a.replay || !a.replay_policy.is_empty() {
        let mut policies: Vec<(String, PolicyDocument)> = vec![("generated".to_string(), parsed)];
        for path in &a.replay_policy {
            policies.push((path.display().to_string(), read_policy(path)?));
        }
        let account = arn_account(&a.identity).filter(|x| !x.is_empty()).unwrap_or("000000000000");
        let models: Vec<_> = policies.iter().map(|(_, d)| replay_model(d, account)).collect();
        let (_, per_thread) = for_each_event_where(
            &inputs,
            &s3,
            &normalizer,
            ReadOptions::default(),
            threads,
            &|raw| prefilter.keeps(raw),
            || vec![ReplayCounts::default(); models.len()],
            |counts, ev| {
                for ((model, subject), c) in models.iter().zip(counts.iter_mut()) {
                    generator.replay(model, *subject, (start, end), c, ev);
                }
            },
        )
        .context("reading CloudTrail for the replay")?;
        let mut total = vec![ReplayCounts::default(); models.len()];
        for counts in per_thread {
            for (t, c) in total.iter_mut().zip(counts) {
                t.merge(c);
            }
        }
        replays = policies.into_iter().map(|(label, _)| label).zip(total).collect();
    }
    Ok(Outcome {
        generated,
        json,
        identities,
        scan,
        replays,
        seconds,
        replay_seconds: replay_started.elapsed().as_secs_f64(),
    })
}

fn who(a: &GenerateArgs, identities: &[String]) -> String {
    match identities {
        [one] if *one == a.identity => a.identity.clone(),
        _ => format!("{} ({} members)", a.identity, identities.len()),
    }
}

/// The identity, or the group's members.
fn identities(a: &GenerateArgs) -> Result<Vec<String>> {
    let arn = a.identity.trim();
    if !arn.starts_with("arn:") {
        bail!("--identity must be an ARN (arn:aws:iam::123456789012:role/name), got {arn:?}");
    }
    if let Some(rest) = arn.split(':').nth(5)
        && rest.starts_with("assumed-role/")
    {
        bail!("--identity {arn} is a role session: give the role's ARN (arn:aws:iam::ACCOUNT:role/NAME)");
    }
    let is_group = arn.split(':').nth(5).is_some_and(|r| r.starts_with("group/"));
    if !is_group {
        return Ok(vec![arn.to_string()]);
    }
    if a.iam.is_empty() {
        bail!("{arn} is a group, which makes no calls itself: give --iam so that its members' activity is read");
    }
    let (snapshot, _) = crate::analyze::load_snapshot(&a.iam)?;
    group_members(&snapshot, arn)
}

fn group_members(snapshot: &IamSnapshot, arn: &str) -> Result<Vec<String>> {
    let Some(group) = snapshot.groups.iter().find(|g| g.arn == arn) else {
        bail!("group {arn} is not in the IAM snapshots given");
    };
    let mut members: Vec<String> = snapshot
        .users
        .iter()
        .filter(|u| u.account == group.account && u.groups.contains(&group.name))
        .map(|u| u.arn.clone())
        .collect();
    members.sort();
    if members.is_empty() {
        bail!("group {arn} has no members in the IAM snapshots given");
    }
    Ok(members)
}

fn read_policy(path: &Path) -> Result<PolicyDocument> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let value: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{}: not JSON", path.display()))?;
    Ok(parse_policy_document(&value, &path.display().to_string(), "", false)?)
}

/// The summary and the warnings, on stderr.
fn report(err: &mut impl Write, a: &GenerateArgs, o: &Outcome) -> Result<()> {
    let g = &o.generated;
    let who = who(a, &o.identities);
    if let Some((start, end)) = g.window {
        writeln!(
            err,
            "policy generate: {who}: {} statements, {} actions, from {} to {} ({} days); {} events of the identity read; \
             {} files, {} records ({} parsed, the rest naming no identity asked for) in {:.2} s",
            g.policy.statements.len(),
            g.policy.action_count(),
            start.to_rfc3339(),
            end.to_rfc3339(),
            a.lookback_days,
            g.events_seen,
            o.scan.files,
            o.scan.records,
            o.scan.records - o.scan.prefiltered,
            o.seconds
        )?;
    }
    if !g.unmapped.is_empty() {
        writeln!(
            err,
            "warning: {} successful calls in the window map to no IAM action grantwatch knows; they are not in the policy:",
            g.unmapped.len()
        )?;
        for u in &g.unmapped {
            writeln!(err, "  {} {} (last {})", u.service, u.operation, u.last.to_rfc3339())?;
        }
        if g.unmapped_truncated {
            writeln!(err, "  ... and more (the list keeps the first {} names)", g.unmapped.len())?;
        }
    }
    for (file, why) in &o.scan.bad_files {
        writeln!(err, "warning: unreadable CloudTrail file {file}: {why}")?;
    }
    if o.scan.bad_records > 0 {
        writeln!(
            err,
            "warning: {} records that may be the identity's did not normalize (malformed or oversized); `analyze` names them",
            o.scan.bad_records
        )?;
    }
    let chars = o.json.chars().filter(|c| !c.is_whitespace()).count();
    if chars > ROLE_INLINE_MAX_CHARS {
        writeln!(
            err,
            "warning: the policy has {chars} characters without whitespace: over IAM's limits for a managed policy \
             ({MANAGED_POLICY_MAX_CHARS}) and a role's inline policies ({ROLE_INLINE_MAX_CHARS}); lower --max-arns or split it"
        )?;
    } else if chars > MANAGED_POLICY_MAX_CHARS {
        writeln!(
            err,
            "warning: the policy has {chars} characters without whitespace: over IAM's limit for a managed policy \
             ({MANAGED_POLICY_MAX_CHARS}); it fits a role's inline policies ({ROLE_INLINE_MAX_CHARS})"
        )?;
    }
    for (label, c) in &o.replays {
        writeln!(
            err,
            "replay {label}: {} events replayed, {} denied ({} requests, {} denied) in {:.2} s",
            c.events, c.denied, c.requests, c.denied_requests, o.replay_seconds
        )?;
        for (action, resource) in &c.examples {
            writeln!(err, "  denied: {action} on {resource}")?;
        }
    }
    Ok(())
}

/// Writes through a fresh temporary file renamed into place: a reader never sees half a policy, and a
/// symlink planted at `path` is replaced, never written through.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "policy".into());
    let tmp = path.with_file_name(format!(".{name}.tmp"));
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&tmp)
        .with_context(|| format!("creating {}", tmp.display()))?;
    f.write_all(bytes).with_context(|| format!("writing {}", tmp.display()))?;
    f.sync_data().with_context(|| format!("writing {}", tmp.display()))?;
    drop(f);
    std::fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))
}
