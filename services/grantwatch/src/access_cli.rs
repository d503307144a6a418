//! `grantwatch access ...`: the command-line client of the access service (`grantwatch-access`), over
//! its HTTP API (`schemas/access_api.openapi.json`).

use std::path::PathBuf;

use anyhow::{Result, bail};
use clap::{Args, Subcommand};

/// Where the service is and who is asking.
#[derive(Args, Debug)]
pub struct AccessArgs {
    /// The access service's base URL.
    #[arg(long, env = "GRANTWATCH_ACCESS_URL", default_value = "http://127.0.0.1:8790", global = true)]
    pub url: String,
    /// A file holding your bearer token (a static token or an OIDC JWT). Without it the token is read
    /// from GRANTWATCH_ACCESS_TOKEN. Never given on the command line, where `ps` would show it.
    #[arg(long, global = true)]
    pub token_file: Option<PathBuf>,
    #[command(subcommand)]
    pub command: AccessCommand,
}

#[derive(Subcommand, Debug)]
pub enum AccessCommand {
    /// Ask for extra permissions for a limited time.
    Request(RequestArgs),
    /// Approve a pending request (a high-risk request needs two approvers).
    Approve(DecideArgs),
    /// Deny a pending request.
    Deny(DecideArgs),
    /// Withdraw a request that is not active yet.
    Cancel(DecideArgs),
    /// Take an active grant back before its time.
    Revoke(DecideArgs),
    /// List requests, newest first.
    List(ListArgs),
    /// One request with its whole transition log.
    Show(ShowArgs),
}

#[derive(Args, Debug)]
pub struct RequestArgs {
    /// The IAM user or role ARN that receives the access.
    #[arg(long, conflicts_with = "identity_center_user")]
    pub identity: Option<String>,
    /// An IAM Identity Center user id (with --permission-set).
    #[arg(long)]
    pub identity_center_user: Option<String>,
    /// The account the access is granted in (default: the identity ARN's account).
    #[arg(long)]
    pub account: Option<String>,
    /// An action, optionally with resources: `s3:GetObject` (on `*`) or
    /// `s3:GetObject=arn:aws:s3:::logs/*,arn:aws:s3:::audit/*`. Repeat for more.
    #[arg(long = "action", conflicts_with_all = ["managed_policy", "permission_set"])]
    pub actions: Vec<String>,
    /// An existing managed policy ARN to attach for the duration.
    #[arg(long, conflicts_with = "permission_set")]
    pub managed_policy: Option<String>,
    /// An IAM Identity Center permission set name to assign on --account for the duration.
    #[arg(long)]
    pub permission_set: Option<String>,
    /// How long: `90m`, `2h`, `3600s`, `3600`.
    #[arg(long)]
    pub duration: String,
    #[arg(long)]
    pub justification: String,
    #[arg(long)]
    pub ticket: Option<String>,
    /// A request id of your own ([A-Za-z0-9_-], up to 64); the service makes one otherwise.
    #[arg(long)]
    pub id: Option<String>,
}

#[derive(Args, Debug)]
pub struct DecideArgs {
    /// The request id.
    pub id: String,
    /// Why (required to deny, cancel or revoke).
    #[arg(long, default_value = "")]
    pub reason: String,
}

#[derive(Args, Debug)]
pub struct ListArgs {
    /// Only requests in this state (pending, approved, active, expired, denied, cancelled, revoked, failed).
    #[arg(long)]
    pub state: Option<String>,
    /// Only requests for this identity (ARN or Identity Center user id).
    #[arg(long)]
    pub identity: Option<String>,
    /// At most this many.
    #[arg(long, default_value_t = 100)]
    pub limit: usize,
    /// JSON lines instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct ShowArgs {
    pub id: String,
}

pub fn run(args: &AccessArgs, _out: &mut dyn std::io::Write) -> Result<std::process::ExitCode> {
    bail!("grantwatch access {:?}: the client is being built", args.command)
}
