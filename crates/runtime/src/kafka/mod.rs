//! The Kafka driver of the grantwatch services (feature `kafka`).
//!
//! The services' logic lives in `grantwatch-core` and `grantwatch-detect` stages, the same ones
//! `grantwatch analyze` runs; this module only moves records between Kafka and those stages:
//! [`runner`] (consume–process–produce, exactly-once in effect), [`apps`] (the processor and the
//! detector as apps of the runner), [`client`] (clients, transactions),
//! [`config`] (file + environment), [`metrics`] (Prometheus and health over HTTP), [`topics`] (creating
//! the topics), [`error`] (one error type, classified in one place: configuration, transient broker
//! trouble, state, fatal).

pub mod apps;
pub mod changelog;
pub mod client;
pub mod config;
pub mod error;
pub mod ingest;
mod lookup;
pub mod metrics;
pub mod runner;
pub mod topics;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

pub use error::{ErrorClass, Stopped, StreamError};

static STOP: OnceLock<Arc<AtomicBool>> = OnceLock::new();

/// A flag set by SIGTERM or SIGINT: services finish and commit in-flight work, then exit.
pub fn stop_flag() -> Result<Arc<AtomicBool>, StreamError> {
    if let Some(stop) = STOP.get() {
        return Ok(stop.clone());
    }
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(signal, stop.clone()).map_err(StreamError::io("installing signal handlers"))?;
    }
    Ok(STOP.get_or_init(|| stop).clone())
}

/// Whether a stop was requested (retry loops give up waiting for the broker then).
pub fn stopping() -> bool {
    STOP.get().is_some_and(|s| s.load(Ordering::Relaxed))
}

/// Exit status of a service: success for a clean stop (a [`Stopped`] anywhere in the error's chain),
/// 1 otherwise. Generic so a binary's own error type (anyhow, with its context) passes straight in;
/// the alternate form (`{:#}`) prints such an error with its causes.
pub fn exit_code<E>(result: Result<(), E>) -> std::process::ExitCode
where
    E: AsRef<dyn std::error::Error + Send + Sync + 'static> + std::fmt::Display,
{
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) if error::is_stop(e.as_ref()) => {
            tracing::info!("{e}");
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            tracing::error!("{e:#}");
            std::process::ExitCode::from(1)
        }
    }
}

/// Structured logs on stderr: `RUST_LOG` filters (default `info`), `GRANTWATCH_LOG_FORMAT=json` for
/// one JSON object per line.
pub fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if std::env::var("GRANTWATCH_LOG_FORMAT").is_ok_and(|v| v == "json") {
        builder.json().init();
    } else {
        builder.init();
    }
}
