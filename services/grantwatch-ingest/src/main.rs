//! `grantwatch-ingest`: activity logs of every cloud (watched directories, the LookupEvents API, the
//! Okta System Log and Google Workspace Reports APIs, JSON Lines on stdin) and entitlements (IAM
//! snapshots, Azure and GCP exports, identity-provider directories) in; normalized events (keyed by
//! identity) and entitlements out. The
//! driver, exactly-once through transactions that carry source checkpoints, is
//! `grantwatch_runtime::kafka::ingest`; this binary is its command line.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use grantwatch_runtime::clouds::CloudPaths;
use grantwatch_runtime::kafka::config::Config;
use grantwatch_runtime::kafka::ingest::{IngestArgs, run_ingest};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(version, about = "grantwatch ingest: activity logs and entitlements of every cloud into Kafka")]
struct Cli {
    /// Configuration file (TOML); `GRANTWATCH_*` environment variables override it.
    #[arg(long, short, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create the topics of the configuration (existing ones are left as they are).
    CreateTopics,
    /// Ingest until stopped (SIGTERM), or once with --once.
    Run(Box<RunArgs>),
}

#[derive(clap::Args)]
struct RunArgs {
    /// A directory of activity logs (CloudTrail in the S3 delivery layout, Azure Activity `PT1H.json`,
    /// GCP audit exports, Okta and Workspace logs; .json(.gz) or .jsonl files) to watch for new files.
    #[arg(long)]
    watch: Vec<PathBuf>,
    /// IAM snapshot files (`aws iam get-account-authorization-details` output), re-read when changed.
    #[arg(long)]
    iam: Vec<PathBuf>,
    /// Read CloudTrail records as JSON Lines from stdin until end of input, then exit.
    #[arg(long)]
    stdin: bool,
    /// Poll the LookupEvents sources of the configuration (`[[ingest.lookup_events]]`).
    #[arg(long)]
    lookup_events: bool,
    /// Process what is there now, then exit (instead of watching).
    #[arg(long)]
    once: bool,
    /// AWS Organizations tree with its SCPs and RCPs (docs/organizations.md), capping the
    /// entitlements published from --iam.
    #[arg(long, value_name = "FILE")]
    organization: Option<PathBuf>,
    /// Azure exports (role definitions and assignments, Entra directory, hierarchy), files or
    /// directories; Activity Logs among them are ingested too. Re-published when a file changes.
    #[arg(long, value_name = "PATH")]
    azure: Vec<PathBuf>,
    /// GCP exports (Cloud Asset Inventory IAM policies, custom roles, service accounts); audit logs
    /// among them are ingested too.
    #[arg(long, value_name = "PATH")]
    gcp: Vec<PathBuf>,
    /// Okta directory exports (users, groups, app assignments), linking humans; System Log files
    /// among them are ingested too.
    #[arg(long, value_name = "PATH")]
    okta: Vec<PathBuf>,
    /// Google Workspace directory exports (users, groups), linking humans; Reports activities among
    /// them are ingested too.
    #[arg(long, value_name = "PATH")]
    workspace: Vec<PathBuf>,
    /// IAM Identity Center exports (identitystore users, groups, memberships; sso-admin assignments).
    #[arg(long, value_name = "PATH")]
    identity_center: Vec<PathBuf>,
    /// The human mapping file (docs/identity-providers.md): always wins.
    #[arg(long, value_name = "FILE")]
    humans: Option<PathBuf>,
    /// Pull the Okta System Log sources of the configuration (`[[ingest.okta]]`).
    #[arg(long)]
    okta_logs: bool,
    /// Pull the Google Workspace Reports sources of the configuration (`[[ingest.workspace]]`).
    #[arg(long)]
    workspace_reports: bool,
}

fn real_main() -> Result<()> {
    let cli = Cli::parse();
    let cfg = Config::load(cli.config.as_deref())?;
    match cli.command {
        Command::CreateTopics => {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting tokio")?;
            for (name, created) in
                rt.block_on(grantwatch_runtime::kafka::topics::create_topics(&cfg.kafka, &cfg.topics))?
            {
                eprintln!("{name}: {}", if created { "created" } else { "exists" });
            }
            Ok(())
        }
        Command::Run(args) => {
            tracing::info!(kafka = ?cfg.kafka, ingest = ?cfg.ingest, "starting grantwatch-ingest");
            let RunArgs {
                watch,
                iam,
                stdin,
                lookup_events,
                once,
                organization,
                azure,
                gcp,
                okta,
                workspace,
                identity_center,
                humans,
                okta_logs,
                workspace_reports,
            } = *args;
            let clouds = CloudPaths { azure, gcp, okta, workspace, identity_center, humans };
            let args = IngestArgs {
                watch,
                iam,
                stdin,
                lookup_events,
                once,
                organization,
                clouds,
                okta_logs,
                workspace_reports,
            };
            Ok(run_ingest(cfg, args)?)
        }
    }
}

fn main() -> ExitCode {
    grantwatch_runtime::kafka::init_tracing();
    grantwatch_runtime::kafka::exit_code(real_main())
}
