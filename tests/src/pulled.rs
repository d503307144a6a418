//! A recorded fake of the two pulled APIs of `grantwatch-ingest`, on 127.0.0.1, in their real shapes:
//! the Okta System Log (`GET /api/v1/logs`: a JSON array, `Link: <...>; rel="next"` on every page
//! (Okta's polling cursor), `X-Rate-Limit-*` headers, `SSWS` tokens) and the Google Workspace Admin SDK
//! Reports (`GET /admin/reports/v1/activity/users/all/applications/{app}`: `{"kind":
//! "admin#reports#activities", "items": [...], "nextPageToken": ...}`, newest first, `startTime` and
//! `endTime` inclusive, bearer tokens, a `Date` header). Either answers one chosen request with a 429
//! and its rate-limit headers, and every page after a configurable delay (so a test can kill the
//! ingest mid-stream).
#![allow(clippy::unwrap_used)] // test support: a panic is a failed test

use std::collections::BTreeMap;
use std::io::BufReader;
use std::net::TcpStream;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use grantwatch_types::EventTime;

use crate::http1::{read_message, respond, serve};

#[derive(Default)]
pub struct FakeState {
    pub okta_token: String,
    pub workspace_token: String,
    /// System Log events, oldest first (as `published` orders them).
    pub okta_events: Vec<serde_json::Value>,
    /// Reports activities per application (any order: answered newest first).
    pub activities: BTreeMap<String, Vec<serde_json::Value>>,
    /// The API's clock (the `Date` header), in milliseconds.
    pub now_ms: i64,
    pub page_delay: Duration,
    /// The 0-based request (counting every request) answered 429 instead.
    pub throttle_request: Option<usize>,
    /// Request targets (path and query) received, in order.
    pub requests: Vec<String>,
    /// Requests refused: a wrong or missing Authorization.
    pub unauthorized: usize,
    pub throttled: usize,
}

pub struct FakeApis {
    pub url: String,
    pub state: Arc<Mutex<FakeState>>,
}

impl FakeApis {
    pub fn start(okta_token: &str, workspace_token: &str) -> FakeApis {
        let state = Arc::new(Mutex::new(FakeState {
            okta_token: okta_token.into(),
            workspace_token: workspace_token.into(),
            ..Default::default()
        }));
        let shared = state.clone();
        let url = serve(move |conn| handle(conn, &shared));
        FakeApis { url, state }
    }

    pub fn with<R>(&self, f: impl FnOnce(&mut FakeState) -> R) -> R {
        f(&mut self.state.lock().unwrap())
    }

    pub fn requests(&self) -> Vec<String> {
        self.with(|s| s.requests.clone())
    }
}

fn query(target: &str) -> BTreeMap<String, String> {
    let Some((_, q)) = target.split_once('?') else { return BTreeMap::new() };
    q.split('&').filter_map(|kv| kv.split_once('=')).map(|(k, v)| (k.to_string(), percent_decode(v))).collect()
}

fn percent_decode(v: &str) -> String {
    let b = v.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                out.push(u8::from_str_radix(&v[i + 1..i + 3], 16).unwrap());
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).unwrap()
}

/// `Tue, 14 Nov 2023 22:13:20 GMT`.
fn http_date(ms: i64) -> String {
    let t = EventTime(ms).to_rfc3339(); // 2023-11-14T22:13:20Z or with millis
    let (date, time) = t.split_once('T').unwrap();
    let hms = &time[..8];
    let mut p = date.split('-');
    let (y, m, d) = (p.next().unwrap(), p.next().unwrap(), p.next().unwrap());
    const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    let month = MONTHS[m.parse::<usize>().unwrap() - 1];
    // The weekday is not read by anyone; any will do.
    format!("Mon, {d} {month} {y} {hms} GMT")
}

fn handle(conn: TcpStream, state: &Mutex<FakeState>) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(30)));
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let Ok(Some((first, headers, _))) = read_message(&mut reader) else { return };
    let target = first.split_whitespace().nth(1).unwrap_or_default().to_string();
    let auth = headers.iter().find(|(k, _)| k.eq_ignore_ascii_case("authorization")).map(|(_, v)| v.clone());
    let (delay, answer) = {
        let mut s = state.lock().unwrap();
        let n = s.requests.len();
        s.requests.push(target.clone());
        let answer = if s.throttle_request == Some(n) {
            s.throttled += 1;
            throttled()
        } else if target.starts_with("/api/v1/logs") {
            if auth.as_deref() != Some(format!("SSWS {}", s.okta_token).as_str()) {
                s.unauthorized += 1;
                unauthorized()
            } else {
                okta_page(&s, &target)
            }
        } else if let Some(rest) = target.strip_prefix("/admin/reports/v1/activity/users/all/applications/") {
            if auth.as_deref() != Some(format!("Bearer {}", s.workspace_token).as_str()) {
                s.unauthorized += 1;
                unauthorized()
            } else {
                let app = rest.split('?').next().unwrap_or_default().to_string();
                workspace_page(&s, &app, &target)
            }
        } else {
            ("404 Not Found", Vec::new(), b"{}".to_vec())
        };
        (s.page_delay, answer)
    };
    std::thread::sleep(delay);
    let now = state.lock().unwrap().now_ms;
    let (status, mut headers, body) = answer;
    headers.push(("Content-Type".into(), "application/json".into()));
    headers.push(("Date".into(), http_date(now)));
    let mut conn = conn;
    let _ = respond(&mut conn, status, &headers, &body);
}

type Answer = (&'static str, Vec<(String, String)>, Vec<u8>);

fn unauthorized() -> Answer {
    ("401 Unauthorized", Vec::new(), br#"{"errorCode":"E0000011","errorSummary":"Invalid token provided"}"#.to_vec())
}

/// A 429 as Okta sends it (Google sends `Retry-After`; both are here).
fn throttled() -> Answer {
    // Reset in one second of the wall clock (the ingest measures it against its own).
    #[allow(clippy::disallowed_methods)]
    let wall = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() + 1;
    (
        "429 Too Many Requests",
        vec![
            ("X-Rate-Limit-Limit".into(), "20".into()),
            ("X-Rate-Limit-Remaining".into(), "0".into()),
            ("X-Rate-Limit-Reset".into(), wall.to_string()),
        ],
        br#"{"errorCode":"E0000047","errorSummary":"API call exceeded rate limit due to too many requests."}"#.to_vec(),
    )
}

fn okta_page(s: &FakeState, target: &str) -> Answer {
    let q = query(target);
    let limit: usize = q.get("limit").and_then(|l| l.parse().ok()).unwrap_or(100);
    let from = match q.get("after").and_then(|a| a.strip_prefix('c')).and_then(|n| n.parse::<usize>().ok()) {
        Some(n) => n,
        None => {
            let since = q.get("since").and_then(|t| EventTime::parse_rfc3339(t));
            s.okta_events
                .iter()
                .position(|e| {
                    since.is_none_or(|since| {
                        EventTime::parse_rfc3339(e["published"].as_str().unwrap()).unwrap() >= since
                    })
                })
                .unwrap_or(s.okta_events.len())
        }
    };
    let from = from.min(s.okta_events.len());
    let page: Vec<&serde_json::Value> = s.okta_events.iter().skip(from).take(limit).collect();
    let next = from + page.len();
    let host = target.split('?').next().unwrap_or_default();
    let headers = vec![
        ("Link".to_string(), format!("<{host}?limit={limit}&sortOrder=ASCENDING>; rel=\"self\"")),
        // Okta's links are absolute; a relative one resolves against the page's URL as well.
        ("Link".to_string(), format!("</api/v1/logs?after=c{next}&limit={limit}&sortOrder=ASCENDING>; rel=\"next\"")),
        ("X-Rate-Limit-Limit".to_string(), "20".into()),
        ("X-Rate-Limit-Remaining".to_string(), "19".into()),
        ("X-Rate-Limit-Reset".to_string(), "0".into()),
    ];
    ("200 OK", headers, serde_json::to_vec(&page).unwrap())
}

fn workspace_page(s: &FakeState, app: &str, target: &str) -> Answer {
    let q = query(target);
    let time = |a: &serde_json::Value| EventTime::parse_rfc3339(a["id"]["time"].as_str().unwrap()).unwrap();
    let start = q.get("startTime").map(|t| EventTime::parse_rfc3339(t).unwrap());
    let end = q.get("endTime").map(|t| EventTime::parse_rfc3339(t).unwrap());
    let max: usize = q.get("maxResults").and_then(|m| m.parse().ok()).unwrap_or(1000);
    let offset: usize = q.get("pageToken").and_then(|t| t.strip_prefix('o')).and_then(|n| n.parse().ok()).unwrap_or(0);
    let mut all: Vec<&serde_json::Value> = s
        .activities
        .get(app)
        .map(|v| v.iter().filter(|a| start.is_none_or(|s| time(a) >= s) && end.is_none_or(|e| time(a) <= e)).collect())
        .unwrap_or_default();
    all.sort_by(|a, b| {
        (time(b), b["id"]["uniqueQualifier"].to_string()).cmp(&(time(a), a["id"]["uniqueQualifier"].to_string()))
    });
    let page: Vec<&serde_json::Value> = all.iter().skip(offset).take(max).copied().collect();
    let mut body = serde_json::json!({"kind": "admin#reports#activities", "etag": "\"fake\""});
    if !page.is_empty() {
        body["items"] = serde_json::json!(page);
    }
    if offset + page.len() < all.len() {
        body["nextPageToken"] = format!("o{}", offset + page.len()).into();
    }
    ("200 OK", Vec::new(), serde_json::to_vec(&body).unwrap())
}

/// An Okta System Log event as `/api/v1/logs` returns it.
pub fn okta_event(uuid: &str, published_ms: i64, user: &str, event_type: &str) -> serde_json::Value {
    serde_json::json!({
        "actor": {"id": format!("00u{user}"), "type": "User", "alternateId": format!("{user}@example.com"), "displayName": user, "detailEntry": null},
        "client": {"userAgent": {"rawUserAgent": "Mozilla/5.0", "os": "Mac OS X", "browser": "CHROME"}, "zone": "null", "device": "Computer", "id": null, "ipAddress": "198.51.100.7", "geographicalContext": {"city": "Paris", "state": null, "country": "France", "postalCode": null, "geolocation": {"lat": 48.85, "lon": 2.35}}},
        "authenticationContext": {"authenticationProvider": null, "credentialProvider": null, "credentialType": null, "issuer": null, "interface": null, "authenticationStep": 0, "externalSessionId": "102abc"},
        "displayMessage": "User login to Okta",
        "eventType": event_type,
        "outcome": {"result": "SUCCESS", "reason": null},
        "published": EventTime(published_ms).to_rfc3339(),
        "securityContext": {"asNumber": null, "asOrg": null, "isp": null, "domain": null, "isProxy": null},
        "severity": "INFO",
        "debugContext": {"debugData": {"requestId": format!("req-{uuid}"), "requestUri": "/api/v1/authn", "url": "/api/v1/authn?"}},
        "legacyEventType": "core.user_auth.login_success",
        "transaction": {"type": "WEB", "id": format!("tx-{uuid}"), "detail": {}},
        "uuid": uuid,
        "version": "0",
        "request": {"ipChain": []},
        "target": []
    })
}

/// A Reports activity (`admin#reports#activity`) with one event per name.
pub fn workspace_activity(
    app: &str,
    qualifier: &str,
    time_ms: i64,
    customer: &str,
    profile: &str,
    names: &[&str],
) -> serde_json::Value {
    let events: Vec<serde_json::Value> = names
        .iter()
        .map(|n| serde_json::json!({"type": app, "name": n, "parameters": [{"name": "login_type", "value": "google_password"}]}))
        .collect();
    serde_json::json!({
        "kind": "admin#reports#activity",
        "id": {"time": EventTime(time_ms).to_rfc3339(), "uniqueQualifier": qualifier, "applicationName": app, "customerId": customer},
        "etag": "\"e\"",
        "actor": {"callerType": "USER", "email": format!("{profile}@example.com"), "profileId": profile},
        "ipAddress": "203.0.113.5",
        "events": events
    })
}
