//! `grantwatch remediate apply|rollback` and `grantwatch iam attach|detach|export`: IAM changes made
//! through the AWS API, journaled and reversible. (Being built.)

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Result, bail};

#[derive(clap::Args, Debug)]
pub struct ApplyArgs {
    #[arg(long)]
    pub plan: PathBuf,
    #[arg(long)]
    pub journal: PathBuf,
    #[arg(long = "endpoint-url")]
    pub endpoint_url: Option<String>,
    #[arg(long)]
    pub yes: bool,
}

#[derive(clap::Args, Debug)]
pub struct RollbackArgs {
    #[arg(long)]
    pub journal: PathBuf,
    #[arg(long = "endpoint-url")]
    pub endpoint_url: Option<String>,
    #[arg(long)]
    pub yes: bool,
}

#[derive(clap::Args, Debug)]
pub struct AttachArgs {
    #[arg(long)]
    pub identity: String,
    #[arg(long)]
    pub policy: String,
    #[arg(long)]
    pub journal: PathBuf,
    #[arg(long = "endpoint-url")]
    pub endpoint_url: Option<String>,
    #[arg(long)]
    pub yes: bool,
}

#[derive(clap::Args, Debug)]
pub struct ExportArgs {
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long = "endpoint-url")]
    pub endpoint_url: Option<String>,
}

pub fn apply_cmd(_a: &ApplyArgs) -> Result<ExitCode> {
    bail!("remediate apply is not built yet")
}

pub fn rollback_cmd(_a: &RollbackArgs) -> Result<ExitCode> {
    bail!("remediate rollback is not built yet")
}

pub fn attach_cmd(_a: &AttachArgs, _attach: bool) -> Result<ExitCode> {
    bail!("iam attach/detach is not built yet")
}

pub fn export_cmd(_a: &ExportArgs) -> Result<ExitCode> {
    bail!("iam export is not built yet")
}
