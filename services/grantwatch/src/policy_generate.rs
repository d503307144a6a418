//! `grantwatch policy generate`: a least-privilege policy from activity. (Being built.)

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Result, bail};

#[derive(clap::Args, Debug)]
pub struct GenerateArgs {
    #[arg(long)]
    pub identity: String,
    #[arg(long, required = true, num_args = 1..)]
    pub cloudtrail: Vec<PathBuf>,
}

pub fn generate_cmd(_a: &GenerateArgs) -> Result<ExitCode> {
    bail!("policy generate is not built yet")
}
