//! `grantwatch-access`: the permissions-on-demand service.
//!
//! ```text
//! grantwatch-access serve --config access.toml
//! grantwatch-access openapi                     # the API's OpenAPI document
//! grantwatch-access token new --principal alice --role requester --role approver
//! ```

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use grantwatch_access_service::auth::{Role, new_token, token_hash};
use grantwatch_access_service::aws::AwsGrants;
use grantwatch_access_service::clock::SystemClock;
use grantwatch_access_service::config::ServiceConfig;

#[derive(Parser)]
#[command(version, about = "grantwatch permissions on demand: requests, approvals, time-bound grants revoked on time")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the service.
    Serve {
        /// Configuration file (TOML); GRANTWATCH_ACCESS_SECTION__KEY variables override it. Relative
        /// paths in it are relative to its directory.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Print the API's OpenAPI document.
    Openapi,
    /// Static bearer tokens.
    #[command(subcommand)]
    Token(TokenCommand),
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Make a new random token: prints the token once (give it to its owner) and the entry for the
    /// tokens file (which holds only its hash).
    New {
        #[arg(long)]
        principal: String,
        #[arg(long = "role", required = true, value_parser = parse_role)]
        roles: Vec<Role>,
        #[arg(long = "group")]
        groups: Vec<String>,
    },
    /// Print the SHA-256 of a token read from standard input (for a token made elsewhere).
    Hash,
}

fn parse_role(s: &str) -> Result<Role, String> {
    serde_json::from_value(serde_json::Value::String(s.to_string()))
        .map_err(|_| format!("{s:?}: expected requester, approver or admin"))
}

fn resolve(base: &Path, p: &mut PathBuf) {
    if p.is_relative() {
        *p = base.join(&*p);
    }
}

fn serve(config: &Path) -> Result<()> {
    let mut cfg = ServiceConfig::load(config)?;
    let base = config.parent().unwrap_or(Path::new("."));
    resolve(base, &mut cfg.state_dir);
    resolve(base, &mut cfg.audit_log);
    resolve(base, &mut cfg.rules);
    if let Some(t) = cfg.auth.tokens_file.as_mut() {
        resolve(base, t);
    }
    if let Some(o) = cfg.auth.oidc.as_mut() {
        resolve(base, &mut o.jwks_file);
    }
    if !cfg.listen.ip().is_loopback() {
        tracing::warn!(listen = %cfg.listen, "the API listens beyond loopback: put TLS in front of it");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().thread_name("gw-access").build()?;
    runtime.block_on(async {
        let grants = Arc::new(AwsGrants::connect(&cfg.aws).await?);
        let running = grantwatch_access_service::start(&cfg, Arc::new(SystemClock), grants).await?;
        wait_for_signal().await;
        tracing::info!("stopping: finishing revocations in flight and draining the audit outbox");
        running.shutdown().await;
        Ok(())
    })
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

fn run() -> Result<()> {
    let cli = Cli::parse();
    let mut out = std::io::stdout().lock();
    use std::io::Write;
    match cli.command {
        Command::Serve { config } => serve(&config),
        Command::Openapi => Ok(out.write_all(grantwatch_access_service::api::openapi_json().as_bytes())?),
        Command::Token(TokenCommand::New { principal, roles, groups }) => {
            let token = new_token();
            let entry = toml::Value::Table(toml::map::Map::from_iter([
                ("principal".to_string(), toml::Value::String(principal)),
                (
                    "roles".to_string(),
                    toml::Value::Array(
                        roles
                            .iter()
                            .map(|r| {
                                toml::Value::String(
                                    serde_json::to_value(r)
                                        .ok()
                                        .and_then(|v| v.as_str().map(String::from))
                                        .unwrap_or_default(),
                                )
                            })
                            .collect(),
                    ),
                ),
                ("groups".to_string(), toml::Value::Array(groups.into_iter().map(toml::Value::String).collect())),
                ("sha256".to_string(), toml::Value::String(token_hash(&token))),
            ]));
            writeln!(out, "# the token (shown once; give it to its owner):\n# {token}\n[[token]]\n{entry}")?;
            Ok(())
        }
        Command::Token(TokenCommand::Hash) => {
            let mut token = String::new();
            std::io::stdin().take(64 * 1024).read_to_string(&mut token).context("reading the token")?;
            let token = token.trim();
            if token.is_empty() {
                bail!("no token on standard input");
            }
            writeln!(out, "{}", token_hash(token))?;
            Ok(())
        }
    }
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("GRANTWATCH_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}
