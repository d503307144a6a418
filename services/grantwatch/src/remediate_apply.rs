//! `grantwatch remediate apply|rollback` and `grantwatch iam attach|detach|export`: IAM changes made
//! through the AWS API, journaled and reversible (`grantwatch-aws-iam`; `docs/remediation-apply.md`).
//!
//! Wiring only: options, the wall clock that stamps journal lines, the run's name, the exit status.
//! Credentials come from the SDK's default chain and are never printed.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use grantwatch_aws_iam::{AwsConfig, AwsIam, Journal, Outcome, RunOptions, RunSummary};
use grantwatch_types::{EventTime, RemediationPlan};

use crate::remediate::EXIT_REFUSED;

/// The test hook's environment variable: abort after this many changing calls (as if killed), after
/// the call and before its outcome is journaled.
pub const FAULT_ENV: &str = "GRANTWATCH_FAULT_APPLY_AFTER_CALLS";

/// Where the AWS API is, and whether to act: shared by every command that changes IAM.
#[derive(clap::Args, Debug)]
pub struct AwsArgs {
    /// The IAM, STS and SSO Admin endpoint (moto, a VPC endpoint); default: AWS's.
    #[arg(long = "endpoint-url")]
    pub endpoint_url: Option<String>,
    #[arg(long)]
    pub region: Option<String>,
    /// Refuse unless the credentials are of this account.
    #[arg(long)]
    pub account: Option<String>,
    /// Make the calls (without it: a dry run that prints them).
    #[arg(long)]
    pub yes: bool,
    /// Test hook: abort after this many changing calls (also `GRANTWATCH_FAULT_APPLY_AFTER_CALLS`).
    #[arg(long, hide = true)]
    pub crash_after_calls: Option<u64>,
}

#[derive(clap::Args, Debug)]
pub struct ApplyArgs {
    /// The plan: `DIR/plan.json` (or `DIR`).
    #[arg(long)]
    pub plan: PathBuf,
    /// The journal (JSON Lines, appended to; created if absent). Keep it: rollback reads it.
    #[arg(long)]
    pub journal: PathBuf,
    #[command(flatten)]
    pub aws: AwsArgs,
}

#[derive(clap::Args, Debug)]
pub struct RollbackArgs {
    /// The journal of the apply (or attach/detach) runs to undo.
    #[arg(long)]
    pub journal: PathBuf,
    #[command(flatten)]
    pub aws: AwsArgs,
}

#[derive(clap::Args, Debug)]
pub struct AttachArgs {
    /// A user, role or group ARN.
    #[arg(long)]
    pub identity: String,
    /// A managed policy ARN.
    #[arg(long)]
    pub policy: String,
    /// The journal (appended to; `remediate rollback --journal` reverses it).
    #[arg(long)]
    pub journal: PathBuf,
    #[command(flatten)]
    pub aws: AwsArgs,
}

#[derive(clap::Args, Debug)]
pub struct ExportArgs {
    /// The JSON file to write (the shape `analyze --iam` reads).
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long = "endpoint-url")]
    pub endpoint_url: Option<String>,
    #[arg(long)]
    pub region: Option<String>,
}

/// The wall clock, read here only: it stamps journal lines for the audit, and decides nothing.
#[allow(clippy::disallowed_methods)]
fn wall_clock() -> EventTime {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    EventTime(ms)
}

/// A name for this invocation's journal lines: command, start time, process id.
fn run_name(command: &str) -> String {
    format!("{command}-{}-{}", wall_clock().millis(), std::process::id())
}

fn connect(endpoint_url: &Option<String>, region: &Option<String>) -> Result<AwsIam> {
    Ok(AwsIam::connect(&AwsConfig { endpoint_url: endpoint_url.clone(), region: region.clone() })?)
}

fn crash_after(flag: Option<u64>) -> Result<Option<u64>> {
    if flag.is_some() {
        return Ok(flag);
    }
    match std::env::var(FAULT_ENV) {
        Ok(v) => Ok(Some(v.trim().parse().with_context(|| format!("{FAULT_ENV}={v:?} is not a number"))?)),
        Err(_) => Ok(None),
    }
}

/// The client, the journal and the run options of one command.
fn start(aws: &AwsArgs, journal: &Path, command: &str) -> Result<(AwsIam, Journal, RunOptions<'static>)> {
    let api = connect(&aws.endpoint_url, &aws.region)?;
    let journal = Journal::open(journal, aws.yes)?;
    let opts = RunOptions {
        dry_run: !aws.yes,
        account: aws.account.clone(),
        run: run_name(command),
        clock: &wall_clock,
        crash_after_calls: crash_after(aws.crash_after_calls)?,
    };
    Ok((api, journal, opts))
}

fn exit(summary: &RunSummary) -> ExitCode {
    match summary.outcome {
        Outcome::Refused => ExitCode::from(EXIT_REFUSED),
        Outcome::Completed | Outcome::DryRun => ExitCode::SUCCESS,
    }
}

pub fn apply_cmd(a: &ApplyArgs) -> Result<ExitCode> {
    let plan_path = if a.plan.is_dir() { a.plan.join("plan.json") } else { a.plan.clone() };
    let bytes = std::fs::read(&plan_path).with_context(|| format!("reading {}", plan_path.display()))?;
    let plan: RemediationPlan =
        serde_json::from_slice(&bytes).with_context(|| format!("{}: not a remediation plan", plan_path.display()))?;
    let (mut api, mut journal, opts) = start(&a.aws, &a.journal, "apply")?;
    let mut out = std::io::stdout().lock();
    let summary =
        grantwatch_aws_iam::apply(&mut api, &plan, &plan_path.display().to_string(), &mut journal, &opts, &mut out)
            .with_context(|| format!("remediate apply (journal {})", a.journal.display()))?;
    out.flush()?;
    Ok(exit(&summary))
}

pub fn rollback_cmd(a: &RollbackArgs) -> Result<ExitCode> {
    if !a.journal.exists() {
        anyhow::bail!("{}: no such journal", a.journal.display());
    }
    let (mut api, mut journal, opts) = start(&a.aws, &a.journal, "rollback")?;
    let mut out = std::io::stdout().lock();
    let summary = grantwatch_aws_iam::rollback(&mut api, &mut journal, &opts, &mut out)
        .with_context(|| format!("remediate rollback (journal {})", a.journal.display()))?;
    out.flush()?;
    Ok(exit(&summary))
}

pub fn attach_cmd(a: &AttachArgs, attach: bool) -> Result<ExitCode> {
    let (mut api, mut journal, opts) = start(&a.aws, &a.journal, if attach { "attach" } else { "detach" })?;
    let mut out = std::io::stdout().lock();
    let summary = grantwatch_aws_iam::attach(&mut api, &mut journal, &a.identity, &a.policy, attach, &opts, &mut out)
        .with_context(|| {
        format!("iam {} (journal {})", if attach { "attach" } else { "detach" }, a.journal.display())
    })?;
    out.flush()?;
    Ok(exit(&summary))
}

pub fn export_cmd(a: &ExportArgs) -> Result<ExitCode> {
    let mut api = connect(&a.endpoint_url, &a.region)?;
    let doc = api.export().context("iam export")?;
    let dir = a.out.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    crate::output::Outputs::new(dir).write_json(&a.out, &doc)?;
    let count = |k: &str| doc.get(k).and_then(serde_json::Value::as_array).map_or(0, Vec::len);
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "Exported account {}: {} users, {} groups, {} roles, {} managed policies, {} access keys → {}",
        doc.get("Account").and_then(serde_json::Value::as_str).unwrap_or("?"),
        count("UserDetailList"),
        count("GroupDetailList"),
        count("RoleDetailList"),
        count("Policies"),
        count("AccessKeyMetadata"),
        a.out.display()
    )?;
    Ok(ExitCode::SUCCESS)
}
