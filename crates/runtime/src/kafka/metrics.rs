//! Prometheus metrics and the health state, served over HTTP by [`serve`].

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TopicLabel {
    pub topic: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PathLabel {
    pub path: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PartitionLabel {
    pub topic: String,
    pub partition: String,
}

/// Every metric a service exports; names are documented in the README.
pub struct Metrics {
    pub records_in: Family<TopicLabel, Counter>,
    pub records_out: Family<KindLabel, Counter>,
    pub dead_letters: Counter,
    pub late_events: Counter,
    pub commits: Counter,
    pub commit_failures: Counter,
    pub consumer_lag: Family<PartitionLabel, Gauge>,
    /// Event-time watermark (ms) per partition of the events topic, and the side input's.
    pub watermark: Family<PartitionLabel, Gauge>,
    /// Records a task still has to re-read to restore its state (0 when none), per input partition.
    pub restore_remaining: Family<PartitionLabel, Gauge>,
    /// Tasks opened, by the recovery path they took.
    pub recoveries: Family<PathLabel, Counter>,
    pub state_bytes: Gauge,
    pub events_per_second: Gauge,
    pub broker_up: Gauge,
    registry: Registry,
}

impl Metrics {
    pub fn new() -> Arc<Metrics> {
        let mut registry = Registry::with_prefix("grantwatch");
        let m = Metrics {
            records_in: Family::default(),
            records_out: Family::default(),
            dead_letters: Counter::default(),
            late_events: Counter::default(),
            commits: Counter::default(),
            commit_failures: Counter::default(),
            consumer_lag: Family::default(),
            watermark: Family::default(),
            recoveries: Family::default(),
            restore_remaining: Family::default(),
            state_bytes: Gauge::default(),
            events_per_second: Gauge::default(),
            broker_up: Gauge::default(),
            registry: Registry::default(),
        };
        let r = &mut registry;
        r.register("records_in", "Records consumed (or read from sources), by topic", m.records_in.clone());
        r.register(
            "records_out",
            "Records produced, by kind (event, alert, pci, finding, late, dlq, ...)",
            m.records_out.clone(),
        );
        r.register("dead_letters", "Records sent to the dead-letter topic", m.dead_letters.clone());
        r.register(
            "late_events",
            "Events later than the watermark (copied to the late topic, still counted)",
            m.late_events.clone(),
        );
        r.register("commits", "Kafka transactions committed", m.commits.clone());
        r.register("commit_failures", "Kafka transactions aborted or retried", m.commit_failures.clone());
        r.register(
            "consumer_lag",
            "Records between the committed position and the end of the partition",
            m.consumer_lag.clone(),
        );
        r.register(
            "watermark_ms",
            "Event-time watermark per input partition (events: highest event time minus the bound; side inputs: the latest mark)",
            m.watermark.clone(),
        );
        r.register(
            "restore_remaining_records",
            "Input records a task still re-reads to restore its state after a move or a crash (0: restored)",
            m.restore_remaining.clone(),
        );
        r.register(
            "task_recoveries",
            "Partition tasks opened, by recovery path (outbox_resent, outbox_dropped, caught_up, rebuilt, producer_renewed)",
            m.recoveries.clone(),
        );
        r.register("state_bytes", "RocksDB state on disk (live SST files), all partitions", m.state_bytes.clone());
        r.register("events_per_second", "Input records per second over the last interval", m.events_per_second.clone());
        r.register("broker_up", "1 when the Kafka broker answered recently", m.broker_up.clone());
        Arc::new(Metrics { registry, ..m })
    }

    pub fn out(&self, kind: &str) -> Counter {
        self.records_out.get_or_create(&KindLabel { kind: kind.to_string() }).clone()
    }

    pub fn recovery(&self, path: &str) -> Counter {
        self.recoveries.get_or_create(&PathLabel { path: path.to_string() }).clone()
    }

    pub fn input(&self, topic: &str) -> Counter {
        self.records_in.get_or_create(&TopicLabel { topic: topic.to_string() }).clone()
    }

    pub fn encode(&self) -> String {
        let mut s = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut s, &self.registry);
        s
    }
}

/// What `/health` answers.
#[derive(Default)]
pub struct Health {
    broker_up: AtomicBool,
    ready: AtomicBool,
    draining: AtomicBool,
    last_problem: Mutex<Option<String>>,
    problems: AtomicU64,
    /// When the commit in progress began (none in progress: `None`).
    commit_started: Mutex<Option<std::time::Instant>>,
    /// Partitions assigned to this instance, and those waiting for a side input.
    assigned: AtomicU64,
    waiting: AtomicU64,
}

/// A commit (state, Kafka transaction) in progress longer than this makes `/health` say `stalled`.
pub const STALLED_AFTER: std::time::Duration = std::time::Duration::from_secs(30);

impl Health {
    pub fn new() -> Arc<Health> {
        Arc::new(Health::default())
    }
    pub fn broker_ok(&self) {
        self.broker_up.store(true, Ordering::Relaxed);
        self.ready.store(true, Ordering::Relaxed);
    }
    pub fn broker_down(&self, reason: &str) {
        self.broker_up.store(false, Ordering::Relaxed);
        self.problems.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut p) = self.last_problem.lock() {
            *p = Some(reason.to_string());
        }
    }
    pub fn draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }
    pub fn is_broker_up(&self) -> bool {
        self.broker_up.load(Ordering::Relaxed)
    }
    /// Checks every 2 s, on a thread of its own, that some bootstrap server of `bootstrap` (Kafka's
    /// `host:port,host:port`) accepts a TCP connection, and reports the broker down when none does.
    /// The client's own error reports reach `/health` only when the service polls and only for the
    /// connections it is using; this does not depend on either. It never reports the broker up: that
    /// takes the client reaching it.
    pub fn probe(self: &Arc<Self>, bootstrap: &str) {
        let servers: Vec<String> = bootstrap
            .split(',')
            .map(|s| s.trim().rsplit("://").next().unwrap_or_default().to_string())
            .filter(|s| !s.is_empty())
            .collect();
        let health = Arc::downgrade(self);
        let spawned = std::thread::Builder::new().name("broker-probe".into()).spawn(move || {
            use std::net::{TcpStream, ToSocketAddrs};
            let timeout = std::time::Duration::from_secs(1);
            loop {
                std::thread::sleep(std::time::Duration::from_secs(2));
                let Some(health) = health.upgrade() else { return };
                let reachable = servers.iter().any(|s| {
                    s.to_socket_addrs()
                        .map(|mut addrs| addrs.any(|a| TcpStream::connect_timeout(&a, timeout).is_ok()))
                        .unwrap_or(false)
                });
                if !reachable && health.is_broker_up() {
                    tracing::warn!(bootstrap = %servers.join(","), "no bootstrap server accepts connections");
                    health.broker_down(&format!("no bootstrap server accepts connections ({})", servers.join(",")));
                }
            }
        });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "cannot start the broker probe");
        }
    }
    /// A commit begins (`true`) or ends.
    pub fn committing(&self, started: bool) {
        if let Ok(mut c) = self.commit_started.lock() {
            *c = started.then(std::time::Instant::now);
        }
    }
    /// Partitions assigned, and those whose events wait for a side input.
    pub fn partitions(&self, assigned: usize, waiting: usize) {
        self.assigned.store(assigned as u64, Ordering::Relaxed);
        self.waiting.store(waiting as u64, Ordering::Relaxed);
    }

    /// `(healthy, body)`.
    pub fn report(&self) -> (bool, String) {
        let up = self.is_broker_up();
        let ready = self.ready.load(Ordering::Relaxed);
        let draining = self.draining.load(Ordering::Relaxed);
        let had_problems = self.problems.load(Ordering::Relaxed) > 0;
        let committing = self.commit_started.lock().ok().and_then(|c| c.map(|t| t.elapsed()));
        let stalled = committing.is_some_and(|d| d > STALLED_AFTER);
        let status = match (draining, ready, up) {
            (true, _, _) => "draining",
            (_, _, false) if had_problems => "broker_unreachable",
            _ if stalled => "stalled",
            (_, false, _) => "starting",
            _ => "ok",
        };
        let problem = self.last_problem.lock().ok().and_then(|p| p.clone());
        let body = serde_json::json!({
            "status": status,
            "broker_up": up,
            "last_problem": problem,
            "commit_in_progress_secs": committing.map(|d| d.as_secs()),
            "assigned_partitions": self.assigned.load(Ordering::Relaxed),
            "partitions_waiting_for_side_input": self.waiting.load(Ordering::Relaxed),
        });
        (status == "ok", body.to_string())
    }
}

#[derive(Clone)]
struct Shared {
    metrics: Arc<Metrics>,
    health: Arc<Health>,
}

async fn metrics_handler(State(s): State<Shared>) -> impl IntoResponse {
    s.metrics.broker_up.set(i64::from(s.health.is_broker_up()));
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], s.metrics.encode())
}

async fn health_handler(State(s): State<Shared>) -> impl IntoResponse {
    let (ok, body) = s.health.report();
    let code = if ok { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (code, [(header::CONTENT_TYPE, "application/json")], body)
}

/// Serves `/metrics` and `/health` on `listen` from a background thread (its own small runtime), so
/// the service's processing loop stays synchronous. An empty address disables the endpoint.
pub fn serve(
    key: &str,
    listen: &str,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
) -> Result<Option<SocketAddr>, crate::kafka::StreamError> {
    use crate::kafka::StreamError;
    if listen.is_empty() {
        return Ok(None);
    }
    let addr: SocketAddr =
        listen.parse().map_err(|source| StreamError::ListenAddress { addr: listen.to_string(), source })?;
    let listener = std::net::TcpListener::bind(addr).map_err(StreamError::io(format!(
        "{key} = \"{addr}\": cannot listen there (another process may hold the port)"
    )))?;
    listener.set_nonblocking(true).map_err(StreamError::io(format!("listening on {addr}")))?;
    let bound = listener.local_addr().map_err(StreamError::io(format!("listening on {addr}")))?;
    let app = Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/health", get(health_handler))
        .with_state(Shared { metrics, health });
    std::thread::Builder::new()
        .name("http".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(rt) => rt,
                Err(e) => {
                    tracing::error!(error = %e, "metrics endpoint: no runtime");
                    return;
                }
            };
            rt.block_on(async move {
                match tokio::net::TcpListener::from_std(listener) {
                    Ok(l) => {
                        if let Err(e) = axum::serve(l, app).await {
                            tracing::error!(error = %e, "metrics endpoint stopped");
                        }
                    }
                    Err(e) => tracing::error!(error = %e, "metrics endpoint: bad listener"),
                }
            });
        })
        .map_err(StreamError::io("starting the metrics thread"))?;
    tracing::info!(%bound, "serving /metrics and /health");
    Ok(Some(bound))
}
