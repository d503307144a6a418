//! `grantwatch serve --state DIR`: a read-only web view of the reports (`docs/reports.md`, "Web view").
//!
//! Server-side rendered pages over the same models and renderers as `grantwatch report`: `/` lists
//! identities (filters, server-side sort and pages), `/identity/{uid}` (or `/identity?uid=`) and
//! `/alert/{uid}` are the `identity` and `alert` reports, `/alerts` lists alerts, `/pci` is the
//! `pci-history` report and `/reports/{kind}` any kind with the CLI's filters. Every page answers
//! `?format=json` with the JSON it shows (the report's own, or the list's `figures` and rows), so a test
//! can hold the page to it.
//!
//! What it deliberately is not: a writer, or a holder of the state's lock. The state is opened read-only
//! (RocksDB's read-only mode takes no lock), and reopened whenever its files change, so `analyze` or a
//! service can keep writing it and the next page shows what they committed;
//! analyze's results files are cached by (path, size, mtime) and reread when analyze renames new ones
//! into place. A missing or unreadable state is a 503 page naming the reason, a corrupt one a 500;
//! nothing a request carries can make it panic. It serves no files from disk, so no path it is given
//! reaches the filesystem.

mod data;
mod pages;

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use grantwatch_report::{Chrome, Filters, HtmlOptions, Kind, Report};
use grantwatch_types::EventTime;

use data::Source;

/// What to serve.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// The state directory analyze keeps (`analyze --state DIR`).
    pub state: PathBuf,
    /// analyze's `--out`; `None`: the directory the state records (reread on every request, so a new
    /// analyze run into another directory is followed).
    pub results: Option<PathBuf>,
}

/// The largest page size a list or report page accepts (rows per table page).
pub const MAX_PAGE_SIZE: usize = 1000;
/// The default rows per page.
pub const DEFAULT_PAGE_SIZE: usize = 50;
/// Longest request target accepted (path and query): ARNs are at most ~2 KB.
pub const MAX_URI: usize = 8 * 1024;
/// Requests built at once (each holds a report model in memory); the rest wait their turn.
const MAX_CONCURRENT_BUILDS: usize = 4;

/// The `Content-Security-Policy` of every response: the pages carry their CSS and JS inline and load
/// nothing, so nothing else is allowed (no fetch, no frame, no form posting elsewhere).
pub const CSP: &str = "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:; \
                       form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

struct App {
    source: Source,
    builds: tokio::sync::Semaphore,
}

/// The router: every page, the security headers, the request-size bound and the request log.
pub fn router(opts: ServeOptions) -> Router {
    let app = Arc::new(App { source: Source::new(opts), builds: tokio::sync::Semaphore::new(MAX_CONCURRENT_BUILDS) });
    Router::new()
        .route("/", get(identities))
        .route("/identity", get(identity_by_query))
        .route("/identity/{uid}", get(identity_by_path))
        .route("/alerts", get(alerts))
        .route("/alert/{uid}", get(alert))
        .route("/pci", get(pci))
        .route("/reports", get(reports_index))
        .route("/reports/{kind}", get(report_kind))
        .fallback(not_found)
        .with_state(app)
        .layer(middleware::from_fn(guard))
}

/// Serves `router(opts)` on `listener` until `shutdown` resolves (mini-redis's shape: the caller says
/// what "stop" means).
pub async fn serve(
    listener: tokio::net::TcpListener,
    opts: ServeOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(opts)).with_graceful_shutdown(shutdown).await
}

/// A server on its own thread and runtime (tests, benchmarks): stopped when dropped.
pub struct Server {
    pub addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<std::io::Result<()>>>,
}

impl Server {
    /// Binds `addr` (`127.0.0.1:0` for an ephemeral port) and serves on a background thread.
    pub fn start(opts: ServeOptions, addr: SocketAddr) -> std::io::Result<Server> {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
        let listener = rt.block_on(tokio::net::TcpListener::bind(addr))?;
        let addr = listener.local_addr()?;
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new().name("grantwatch-serve".into()).spawn(move || {
            rt.block_on(serve(listener, opts, async move {
                let _ = rx.await;
            }))
        })?;
        Ok(Server { addr, stop: Some(tx), thread: Some(thread) })
    }

    /// `http://ADDR`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Whether serving on `addr` exposes the view beyond this machine.
pub fn is_loopback(addr: &SocketAddr) -> bool {
    addr.ip().is_loopback()
}

// ---- errors -------------------------------------------------------------------------------------------------

/// A page that could not be made: its status and the reason, shown to the user.
#[derive(Debug)]
pub struct PageError {
    pub status: StatusCode,
    pub reason: String,
}

impl PageError {
    pub fn bad_request(reason: impl Into<String>) -> Self {
        PageError { status: StatusCode::BAD_REQUEST, reason: reason.into() }
    }
    pub fn not_found(reason: impl Into<String>) -> Self {
        PageError { status: StatusCode::NOT_FOUND, reason: reason.into() }
    }
    pub fn unavailable(reason: impl Into<String>) -> Self {
        PageError { status: StatusCode::SERVICE_UNAVAILABLE, reason: reason.into() }
    }
    pub fn internal(reason: impl Into<String>) -> Self {
        PageError { status: StatusCode::INTERNAL_SERVER_ERROR, reason: reason.into() }
    }

    fn response(&self, json: bool) -> Response {
        if json {
            let body = serde_json::json!({"error": self.reason, "status": self.status.as_u16()});
            return (self.status, json_headers(), body.to_string()).into_response();
        }
        let title = self.status.canonical_reason().unwrap_or("Error");
        let body = format!(
            "<h1>{} {}</h1>\n<p class=\"error\" data-error=\"{}\">{}</p>\n",
            self.status.as_u16(),
            pages::esc(title),
            self.status.as_u16(),
            pages::esc(&self.reason)
        );
        (self.status, html_headers(), pages::layout(title, "", &body)).into_response()
    }
}

/// How a report build failure reads to the user: the builder's message, with the status it deserves.
fn build_error(e: grantwatch_report::BuildError) -> PageError {
    use grantwatch_report::BuildError as B;
    let reason = e.to_string();
    match e {
        B::UnknownIdentity(_) | B::UnknownAlert(_) | B::EmptyWindow { .. } => PageError::not_found(reason),
        B::NeedsIdentity(_) | B::NeedsAlert | B::AmbiguousIdentity { .. } | B::BadWindow { .. } => {
            PageError::bad_request(reason)
        }
        B::UnknownAccount(_) => PageError::bad_request(reason),
        B::NoHistory => PageError::unavailable(reason),
        B::State(s) => data::state_error("reading the state", &s),
    }
}

// ---- query parameters ---------------------------------------------------------------------------------------

/// A page's query: the parameters it knows, each given at most once; empty values count as absent (a GET
/// form sends every field).
pub struct Params {
    values: BTreeMap<String, String>,
}

impl Params {
    fn parse(raw: Option<&str>, allowed: &[&str]) -> Result<Params, PageError> {
        let mut values = BTreeMap::new();
        let pairs: Vec<(String, String)> = serde_urlencoded::from_str(raw.unwrap_or(""))
            .map_err(|e| PageError::bad_request(format!("the query string is not valid: {e}")))?;
        for (k, v) in pairs {
            if !allowed.contains(&k.as_str()) && k != "format" {
                return Err(PageError::bad_request(format!(
                    "unknown parameter {k:?}: this page takes {}",
                    allowed.iter().chain(["format"].iter()).copied().collect::<Vec<_>>().join(", ")
                )));
            }
            if v.len() > 2048 {
                return Err(PageError::bad_request(format!("parameter {k:?} is longer than 2048 bytes")));
            }
            if v.trim().is_empty() {
                continue;
            }
            if values.insert(k.clone(), v).is_some() {
                return Err(PageError::bad_request(format!("parameter {k:?} is given twice")));
            }
        }
        Ok(Params { values })
    }

    pub fn get(&self, k: &str) -> Option<&str> {
        self.values.get(k).map(|s| s.trim())
    }

    fn json(&self) -> Result<bool, PageError> {
        match self.get("format") {
            None | Some("html") => Ok(false),
            Some("json") => Ok(true),
            Some(other) => Err(PageError::bad_request(format!("format={other:?}: expected html or json"))),
        }
    }

    fn time(&self, k: &str) -> Result<Option<EventTime>, PageError> {
        self.get(k)
            .map(|s| {
                EventTime::parse_rfc3339(s).ok_or_else(|| {
                    PageError::bad_request(format!("{k}={s:?} is not an RFC 3339 time (e.g. 2026-11-01T00:00:00Z)"))
                })
            })
            .transpose()
    }

    fn number(&self, k: &str, default: usize, min: usize, max: usize) -> Result<usize, PageError> {
        match self.get(k) {
            None => Ok(default),
            Some(s) => match s.parse::<usize>() {
                Ok(n) if (min..=max).contains(&n) => Ok(n),
                _ => Err(PageError::bad_request(format!("{k}={s:?}: expected a whole number from {min} to {max}"))),
            },
        }
    }

    /// The query string back (for links that keep the filters), without `skip`.
    pub fn encode_without(&self, skip: &[&str], extra: &[(&str, String)]) -> String {
        let mut pairs: Vec<(&str, &str)> = self
            .values
            .iter()
            .filter(|(k, _)| !skip.contains(&k.as_str()))
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        pairs.extend(extra.iter().map(|(k, v)| (*k, v.as_str())));
        serde_urlencoded::to_string(&pairs).unwrap_or_default()
    }
}

// ---- handlers -----------------------------------------------------------------------------------------------

type AppState = State<Arc<App>>;

/// Runs `f` (a build: state reads, files, rendering) on the blocking pool, at most
/// [`MAX_CONCURRENT_BUILDS`] at once; its error, and a json/html choice, become the response.
async fn blocking(
    app: Arc<App>,
    json: bool,
    f: impl FnOnce(&Source) -> Result<Response, PageError> + Send + 'static,
) -> Response {
    let Ok(_permit) = app.builds.acquire().await else {
        return PageError::unavailable("the server is shutting down").response(json);
    };
    let app2 = app.clone();
    match tokio::task::spawn_blocking(move || f(&app2.source)).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => e.response(json),
        Err(e) => {
            tracing::error!(error = %e, "A page build failed unexpectedly.");
            PageError::internal("the page could not be built (an internal error; see the server log)").response(json)
        }
    }
}

fn parse_or_fail(raw: &Option<String>, allowed: &[&str]) -> Result<(Params, bool), Box<Response>> {
    // A bad query still chooses JSON when it asks for it, so a script gets a JSON error.
    let wants_json = raw.as_deref().is_some_and(|q| q.split('&').any(|p| p == "format=json"));
    let p = Params::parse(raw.as_deref(), allowed).map_err(|e| Box::new(e.response(wants_json)))?;
    let json = p.json().map_err(|e| Box::new(e.response(wants_json)))?;
    Ok((p, json))
}

async fn identities(State(app): AppState, RawQuery(raw): RawQuery) -> Response {
    let (p, json) = match parse_or_fail(&raw, pages::IDENTITY_PARAMS) {
        Ok(x) => x,
        Err(r) => return *r,
    };
    blocking(app, json, move |src| {
        let snap = src.snapshot(false)?;
        let page = pages::identities(&snap, &p)?;
        Ok(if json { json_response(&page.json) } else { html_response(&page.title, &p, &page.html) })
    })
    .await
}

async fn alerts(State(app): AppState, RawQuery(raw): RawQuery) -> Response {
    let (p, json) = match parse_or_fail(&raw, pages::ALERT_PARAMS) {
        Ok(x) => x,
        Err(r) => return *r,
    };
    blocking(app, json, move |src| {
        let snap = src.snapshot(false)?;
        let page = pages::alerts(&snap, &p)?;
        Ok(if json { json_response(&page.json) } else { html_response(&page.title, &p, &page.html) })
    })
    .await
}

const REPORT_PARAMS: &[&str] = &["from", "to", "account", "identity", "alert", "page", "page_size"];
const SUBJECT_PARAMS: &[&str] = &["from", "to", "page", "page_size"];

async fn identity_by_query(State(app): AppState, RawQuery(raw): RawQuery) -> Response {
    let (p, json) = match parse_or_fail(&raw, &["uid", "from", "to", "page", "page_size"]) {
        Ok(x) => x,
        Err(r) => return *r,
    };
    let Some(uid) = p.get("uid").map(str::to_string) else {
        return PageError::bad_request("/identity needs ?uid=IDENTITY (an ARN or uid)").response(json);
    };
    report_page(app, Kind::Identity, Some(uid), p, json).await
}

async fn identity_by_path(
    State(app): AppState,
    uid: Result<Path<String>, PathRejection>,
    RawQuery(raw): RawQuery,
) -> Response {
    let (p, json) = match parse_or_fail(&raw, SUBJECT_PARAMS) {
        Ok(x) => x,
        Err(r) => return *r,
    };
    match uid {
        Ok(Path(uid)) => report_page(app, Kind::Identity, Some(uid), p, json).await,
        Err(e) => PageError::bad_request(format!("the identity in the path: {e}")).response(json),
    }
}

async fn alert(State(app): AppState, uid: Result<Path<String>, PathRejection>, RawQuery(raw): RawQuery) -> Response {
    let (p, json) = match parse_or_fail(&raw, SUBJECT_PARAMS) {
        Ok(x) => x,
        Err(r) => return *r,
    };
    match uid {
        Ok(Path(uid)) => report_page(app, Kind::Alert, Some(uid), p, json).await,
        Err(e) => PageError::bad_request(format!("the alert in the path: {e}")).response(json),
    }
}

async fn pci(State(app): AppState, RawQuery(raw): RawQuery) -> Response {
    let (p, json) = match parse_or_fail(&raw, REPORT_PARAMS) {
        Ok(x) => x,
        Err(r) => return *r,
    };
    report_page(app, Kind::PciHistory, None, p, json).await
}

async fn report_kind(
    State(app): AppState,
    kind: Result<Path<String>, PathRejection>,
    RawQuery(raw): RawQuery,
) -> Response {
    let (p, json) = match parse_or_fail(&raw, REPORT_PARAMS) {
        Ok(x) => x,
        Err(r) => return *r,
    };
    let kind = match kind {
        Ok(Path(k)) => k,
        Err(e) => return PageError::bad_request(format!("the report kind in the path: {e}")).response(json),
    };
    let Some(kind) = Kind::parse(&kind) else {
        let all: Vec<&str> = Kind::ALL.iter().map(|k| k.as_str()).collect();
        return PageError::not_found(format!("no report kind {kind:?}: the kinds are {}", all.join(", ")))
            .response(json);
    };
    report_page(app, kind, None, p, json).await
}

async fn reports_index(RawQuery(raw): RawQuery) -> Response {
    let (p, json) = match parse_or_fail(&raw, &[]) {
        Ok(x) => x,
        Err(r) => return *r,
    };
    if json {
        let kinds: Vec<serde_json::Value> = Kind::ALL
            .iter()
            .map(|k| serde_json::json!({"kind": k.as_str(), "title": k.title(), "href": format!("/reports/{}", k.as_str())}))
            .collect();
        return json_response(&serde_json::json!({"figures": {"kinds": kinds.len()}, "charts": {}, "kinds": kinds}));
    }
    html_response("Reports", &p, &pages::reports_index())
}

/// A report page: the model built as `grantwatch report` builds it, rendered as a fragment with links
/// into this server; `?format=json` is `grantwatch report --format json`'s output.
async fn report_page(app: Arc<App>, kind: Kind, subject: Option<String>, p: Params, json: bool) -> Response {
    blocking(app, json, move |src| {
        let mut filters = Filters { from: p.time("from")?, to: p.time("to")?, ..Default::default() };
        filters.account = p.get("account").map(str::to_string);
        filters.identity = p.get("identity").map(str::to_string);
        filters.alert = p.get("alert").map(str::to_string);
        match kind {
            Kind::Identity => filters.identity = subject.or(filters.identity),
            Kind::Alert => filters.alert = subject.or(filters.alert),
            _ => {}
        }
        if filters.identity.is_some() && filters.account.is_some() {
            return Err(PageError::bad_request("give identity or account, not both"));
        }
        let page_size = p.number("page_size", 100, 1, MAX_PAGE_SIZE)?;
        let page = p.get("page").map(|_| p.number("page", 1, 1, 1_000_000)).transpose()?;
        let snap = src.snapshot(true)?;
        let report = snap.build(kind, &filters).inspect_err(|e| {
            if e.status.is_server_error() {
                src.forget_state();
            }
        })?;
        if json {
            return Ok((StatusCode::OK, json_headers(), grantwatch_report::render_json(&report)).into_response());
        }
        let body = grantwatch_report::render_html(
            &report,
            &HtmlOptions {
                chrome: Chrome::Fragment,
                page_size,
                page: page.map(|n| n - 1),
                link_prefix: Some(String::new()),
            },
        );
        Ok(html_response(&report_title(&report), &p, &body))
    })
    .await
}

fn report_title(r: &Report) -> String {
    r.title.clone()
}

async fn not_found(req: Request) -> Response {
    let json = req.uri().query().is_some_and(|q| q.split('&').any(|p| p == "format=json"));
    PageError::not_found(format!("no page at {}", req.uri().path())).response(json)
}

// ---- responses ----------------------------------------------------------------------------------------------

fn html_headers() -> [(header::HeaderName, HeaderValue); 1] {
    [(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"))]
}

fn json_headers() -> [(header::HeaderName, HeaderValue); 1] {
    [(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))]
}

fn json_response(v: &serde_json::Value) -> Response {
    (StatusCode::OK, json_headers(), serde_json::to_string_pretty(v).unwrap_or_default()).into_response()
}

fn html_response(title: &str, p: &Params, body: &str) -> Response {
    let json_link = p.encode_without(&["format"], &[("format", "json".to_string())]);
    (StatusCode::OK, html_headers(), pages::layout(title, &json_link, body)).into_response()
}

/// Every response: bounded request target, security headers, one log line (path and status only: a
/// query can name identities, and no request carries secrets worth logging).
async fn guard(req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().chars().take(200).collect::<String>();
    let mut resp = if req.uri().to_string().len() > MAX_URI {
        PageError {
            status: StatusCode::URI_TOO_LONG,
            reason: format!("the request target is longer than {MAX_URI} bytes"),
        }
        .response(false)
    } else {
        next.run(req).await
    };
    let h = resp.headers_mut();
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    tracing::info!(
        method = %method,
        path = %path,
        status = resp.status().as_u16(),
        ms = started.elapsed().as_millis() as u64,
        "Served."
    );
    resp
}
