//! `grantwatch-access`, the service of permissions on demand: an HTTP API over the access ledger
//! (`grantwatch-access` core crate, IO-free), the grant installer and the revocation scheduler
//! against AWS, and the audit trail (log file and Kafka topic). `docs/access-on-demand.md` describes
//! it for operators.
//!
//! * [`api`]: routes, authentication extractor, error mapping, the OpenAPI document.
//! * [`auth`]: static tokens (hashed) and OIDC JWTs (issuer, audience, key set file), roles.
//! * [`engine`]: install after approval, the scheduler, recovery on start.
//! * [`audit`]: the outbox drained into the audit log and the topic.
//! * [`clock`]: the one wall-clock read of grantwatch, behind a trait the tests replace.
//! * [`grants`]: what the engine needs of AWS, as a trait ([`aws::AwsGrants`] is the real one).

pub mod api;
pub mod audit;
pub mod auth;
pub mod aws;
pub mod clock;
pub mod config;
pub mod engine;
pub mod grants;
pub mod limit;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use grantwatch_access_core::{AccessConfig, AccessLedger};
use grantwatch_core::catalog::Catalog;
use grantwatch_state_rocks::RocksStore;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::api::AppState;
use crate::audit::{AuditLog, AuditTopic};
use crate::auth::Authenticator;
use crate::clock::Clock;
use crate::config::ServiceConfig;
use crate::engine::{Engine, Store};
use crate::grants::Grants;
use crate::limit::RateLimiter;

/// A started service.
pub struct Running {
    pub addr: SocketAddr,
    pub engine: Arc<Engine>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Running {
    /// Stops accepting requests, lets revocations in flight record their outcome, drains the audit
    /// outbox, and returns.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

/// Opens the state, recovers what a previous process left (claims, installs), and starts the API,
/// the scheduler and the audit publisher.
pub async fn start(cfg: &ServiceConfig, clock: Arc<dyn Clock>, grants: Arc<dyn Grants>) -> Result<Running> {
    let rules_text =
        std::fs::read_to_string(&cfg.rules).with_context(|| format!("reading the rules {}", cfg.rules.display()))?;
    let rules = AccessConfig::from_toml(&rules_text).with_context(|| cfg.rules.display().to_string())?;
    let auth = Authenticator::new(cfg.auth.tokens_file.as_deref(), cfg.auth.oidc.as_ref())?;
    let catalog = Arc::new(Catalog::aws()?);
    let store: Store = Arc::new(
        RocksStore::open(&cfg.state_dir).with_context(|| format!("opening the state {}", cfg.state_dir.display()))?,
    );
    grantwatch_access_core::verify_index(&store)
        .map_err(|e| anyhow::anyhow!("{}: the access state is inconsistent: {e}", cfg.state_dir.display()))?;
    let ledger = AccessLedger::open(store, rules, catalog);
    let worker = format!("access-{}", std::process::id());
    let engine = Engine::new(
        ledger,
        clock,
        grants,
        worker,
        cfg.scheduler.clone(),
        Duration::from_secs(cfg.aws.call_timeout_secs.max(1)),
    );
    let (released, reinstalled, approved) = engine.recover().await?;
    tracing::info!(released, reinstalled, approved, "recovered the previous run's work");
    let log = AuditLog::open(&cfg.audit_log)?;
    let topic = match &cfg.kafka {
        Some(k) => Some(AuditTopic::new(k).await?),
        None => None,
    };
    let rl = &cfg.rate_limit;
    let state = Arc::new(AppState {
        engine: engine.clone(),
        auth,
        per_principal: RateLimiter::new(rl.per_principal_per_sec, rl.per_principal_burst, rl.max_tracked),
        unauthenticated: RateLimiter::new(rl.unauthenticated_per_sec, rl.unauthenticated_burst, rl.max_tracked),
    });
    let listener =
        tokio::net::TcpListener::bind(cfg.listen).await.with_context(|| format!("binding {}", cfg.listen))?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = watch::channel(false);
    let scheduler = tokio::spawn(engine.clone().run_scheduler(stopped.clone()));
    let publisher = tokio::spawn(audit::run_publisher(engine.clone(), log, topic, stopped.clone()));
    let mut until_stop = stopped;
    let app = api::router(state).into_make_service_with_connect_info::<SocketAddr>();
    let server = tokio::spawn(async move {
        let shutdown = async move {
            let _ = until_stop.wait_for(|s| *s).await;
        };
        if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(shutdown).await {
            tracing::error!(error = %e, "the API server stopped");
        }
    });
    tracing::info!(%addr, "grantwatch-access listening");
    // The server first (no new work), then the scheduler, then the publisher (it drains what they
    // committed).
    Ok(Running { addr, engine, stop, tasks: vec![server, scheduler, publisher] })
}
