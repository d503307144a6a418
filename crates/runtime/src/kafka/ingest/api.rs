//! What the pulled APIs (Okta System Log, Google Workspace Reports) share: the HTTP client (rustls,
//! no redirects: a token is never sent anywhere but the configured host), a GET with bounded retries
//! (429 and 5xx answers, connection errors) that waits out rate limits within a bound, bodies read up
//! to a size cap, and tokens read from files, never shown.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use reqwest::header::HeaderMap;

use crate::kafka::config::IngestConfig;
use crate::kafka::error::{Result, StreamError};

/// The retry and size bounds of every request (`ingest.api_*`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct ApiLimits {
    pub(crate) max_attempts: u32,
    pub(crate) max_wait: Duration,
    pub(crate) max_page_bytes: usize,
}

impl ApiLimits {
    pub(crate) fn of(cfg: &IngestConfig) -> ApiLimits {
        ApiLimits {
            max_attempts: cfg.api_max_attempts.max(1),
            max_wait: Duration::from_secs(cfg.api_max_wait_secs.max(1)),
            max_page_bytes: cfg.api_max_page_bytes,
        }
    }
}

/// The client of every pulled source.
pub(crate) fn client() -> Result<reqwest::Client> {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(120))
        .user_agent(concat!("grantwatch-ingest/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(StreamError::source("building the HTTP client of the pulled APIs"))
}

/// A credential: its `Debug` and `Display` show nothing of it.
pub(crate) struct Secret(String);

impl Secret {
    pub(crate) fn new(value: String) -> Secret {
        Secret(value)
    }

    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// The token in `path` (surrounding white space trimmed), read at every request so that the
/// operator's refresher can replace the file. Errors name the file, never its content.
pub(crate) fn read_token(path: &std::path::Path, what: &str) -> Result<Secret> {
    let text = std::fs::read_to_string(path)
        .map_err(StreamError::source(format!("{what}: reading the token file {}", path.display())))?;
    let token = text.trim();
    if token.is_empty() || token.chars().any(|c| c.is_control() || c == ' ') {
        return Err(StreamError::Source {
            what: format!("{what}: token file {}", path.display()),
            source: "empty, or not one line of printable text".into(),
        });
    }
    Ok(Secret(token.to_string()))
}

/// One page as the API answered it.
pub(crate) struct Page {
    pub(crate) headers: HeaderMap,
    pub(crate) body: Vec<u8>,
}

impl Page {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// Sleeps `d` unless a stop is requested first; `false` if it was.
pub(crate) async fn sleep_unless_stopped(d: Duration, stop: &AtomicBool) -> bool {
    let until = tokio::time::Instant::now() + d;
    while tokio::time::Instant::now() < until {
        if stop.load(Ordering::Relaxed) {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100).min(until - tokio::time::Instant::now())).await;
    }
    !stop.load(Ordering::Relaxed)
}

/// How long a rate limit asks to wait: `Retry-After` seconds, or Okta's `X-Rate-Limit-Reset` (epoch
/// seconds, measured against the wall clock: the edge where time enters); `None` when neither says.
fn rate_limit_wait(headers: &HeaderMap) -> Option<Duration> {
    let get = |n: &str| headers.get(n).and_then(|v| v.to_str().ok()).map(str::trim);
    if let Some(secs) = get("retry-after").and_then(|v| v.parse::<u64>().ok()) {
        return Some(Duration::from_secs(secs));
    }
    let reset_ms = get("x-rate-limit-reset").and_then(|v| v.parse::<i64>().ok())?.saturating_mul(1000);
    let wait = reset_ms.saturating_sub(super::wall_clock_ms()).max(0);
    // A second more: the reset is whole seconds, and the clocks may differ by some.
    Some(Duration::from_millis(u64::try_from(wait).unwrap_or(0)) + Duration::from_secs(1))
}

/// `GET url` with `Authorization: auth`, retried on 429 (after the rate limit's reset, at most
/// `max_wait`), 5xx and connection errors (with exponential backoff) up to `max_attempts`; waits
/// for the reset after an answer that leaves no requests (`X-Rate-Limit-Remaining: 0`). `what` names
/// the source and page in errors. `None` if a stop was requested while waiting.
pub(crate) async fn get(
    client: &reqwest::Client,
    url: &reqwest::Url,
    auth: &Secret,
    limits: ApiLimits,
    what: &str,
    stop: &AtomicBool,
) -> Result<Option<Page>> {
    let fail = |why: String| StreamError::Source { what: what.to_string(), source: why.into() };
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        let backoff = Duration::from_millis(500u64.saturating_mul(1 << attempt.min(16))).min(limits.max_wait);
        let sent = client
            .get(url.clone())
            .header(reqwest::header::AUTHORIZATION, auth.expose())
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await;
        let resp = match sent {
            Ok(r) => r,
            Err(e) if attempt < limits.max_attempts => {
                tracing::warn!(source = what, attempt, error = %e.without_url(), "request failed; retrying");
                if !sleep_unless_stopped(backoff, stop).await {
                    return Ok(None);
                }
                continue;
            }
            Err(e) => return Err(fail(format!("request failed after {attempt} attempts: {}", e.without_url()))),
        };
        let status = resp.status();
        if status.as_u16() == 429 || status.is_server_error() {
            let wait =
                if status.as_u16() == 429 { rate_limit_wait(resp.headers()).unwrap_or(backoff) } else { backoff };
            if attempt >= limits.max_attempts {
                return Err(fail(format!("HTTP {status} after {attempt} attempts")));
            }
            let wait = wait.min(limits.max_wait);
            tracing::warn!(source = what, %status, attempt, wait_ms = wait.as_millis() as u64, "throttled or failed; retrying");
            if !sleep_unless_stopped(wait, stop).await {
                return Ok(None);
            }
            continue;
        }
        let headers = resp.headers().clone();
        let body = read_body(resp, limits.max_page_bytes).await.map_err(fail)?;
        if !status.is_success() {
            // Error bodies (Okta's errorSummary, Google's error.message) say why; bounded.
            let cut = &body[..body.len().min(512)];
            return Err(fail(format!("HTTP {status}: {}", String::from_utf8_lossy(cut))));
        }
        let exhausted = headers
            .get("x-rate-limit-remaining")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            == Some(0);
        if exhausted && let Some(wait) = rate_limit_wait(&headers) {
            let wait = wait.min(limits.max_wait);
            tracing::info!(
                source = what,
                wait_ms = wait.as_millis() as u64,
                "rate limit reached; waiting for its reset"
            );
            if !sleep_unless_stopped(wait, stop).await {
                return Ok(None);
            }
        }
        return Ok(Some(Page { headers, body }));
    }
}

/// The body, at most `max` bytes (a larger one is an error: memory stays bounded).
async fn read_body(mut resp: reqwest::Response, max: usize) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    loop {
        match resp.chunk().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > max {
                    return Err(format!("answer larger than ingest.api_max_page_bytes ({max})"));
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(body),
            Err(e) => return Err(format!("reading the answer: {}", e.without_url())),
        }
    }
}

/// An HTTP date (`Sun, 06 Nov 1994 08:49:37 GMT`, the `Date` header) in milliseconds: the API's own
/// clock, which says whether a time window is settled.
pub(crate) fn http_date_ms(text: &str) -> Option<i64> {
    let parts: Vec<&str> = text.split_whitespace().collect();
    let [_, day, month, year, hms, "GMT"] = parts.as_slice() else { return None };
    const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    let m = MONTHS.iter().position(|x| x == month)? + 1;
    let d: u32 = day.parse().ok()?;
    let y: u32 = year.parse().ok()?;
    grantwatch_types::EventTime::parse_rfc3339(&format!("{y:04}-{m:02}-{d:02}T{hms}Z")).map(|t| t.0)
}

/// The `rel="next"` target of `Link` headers (RFC 8288: several headers, or several links in one).
pub(crate) fn link_next(headers: &HeaderMap) -> Option<String> {
    for value in headers.get_all(reqwest::header::LINK) {
        let Ok(value) = value.to_str() else { continue };
        for link in value.split(',') {
            let mut parts = link.split(';');
            let target = parts.next()?.trim();
            let is_next = parts.any(|p| {
                let p = p.trim().replace(' ', "");
                p == "rel=\"next\"" || p == "rel=next"
            });
            if is_next && let Some(url) = target.strip_prefix('<').and_then(|t| t.strip_suffix('>')) {
                return Some(url.to_string());
            }
        }
    }
    None
}

/// Whether `url` has the origin (scheme, host, port) of `base`: a next link elsewhere would carry the
/// token there.
pub(crate) fn same_origin(base: &reqwest::Url, url: &reqwest::Url) -> bool {
    base.scheme() == url.scheme()
        && base.host_str() == url.host_str()
        && base.port_or_known_default() == url.port_or_known_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_dates_and_secrets() {
        let mut h = HeaderMap::new();
        h.append("link", "<https://a.okta.com/api/v1/logs?limit=2>; rel=\"self\"".parse().unwrap());
        h.append("link", "<https://a.okta.com/api/v1/logs?after=x&limit=2>; rel=\"next\"".parse().unwrap());
        assert_eq!(link_next(&h).as_deref(), Some("https://a.okta.com/api/v1/logs?after=x&limit=2"));
        let mut one = HeaderMap::new();
        one.append("link", "<https://a/self>; rel=\"self\", <https://a/next>; rel=\"next\"".parse().unwrap());
        assert_eq!(link_next(&one).as_deref(), Some("https://a/next"));
        assert_eq!(link_next(&HeaderMap::new()), None);
        assert_eq!(http_date_ms("Tue, 14 Nov 2023 22:13:20 GMT"), Some(1_700_000_000_000));
        assert_eq!(http_date_ms("yesterday"), None);
        assert_eq!(http_date_ms("Tue, 99 Nov 2023 22:13:20 GMT"), None);
        assert_eq!(format!("{:?}", Secret("hunter2".into())), "<redacted>");
        let base = reqwest::Url::parse("https://a.okta.com").unwrap();
        assert!(same_origin(&base, &reqwest::Url::parse("https://a.okta.com:443/x").unwrap()));
        assert!(!same_origin(&base, &reqwest::Url::parse("https://evil.example/x").unwrap()));
        assert!(!same_origin(&base, &reqwest::Url::parse("http://a.okta.com/x").unwrap()));
    }
}
