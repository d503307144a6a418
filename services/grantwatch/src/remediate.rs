//! `grantwatch remediate plan`. (Being built.)

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Result, bail};

#[derive(clap::Args, Debug)]
pub struct PlanArgs {
    #[arg(long, required = true, num_args = 1..)]
    pub iam: Vec<PathBuf>,
    #[arg(long, num_args = 1..)]
    pub cloudtrail: Vec<String>,
    #[arg(long)]
    pub out: PathBuf,
}

pub fn plan_cmd(_a: &PlanArgs) -> Result<ExitCode> {
    bail!("remediate plan is not built yet")
}
