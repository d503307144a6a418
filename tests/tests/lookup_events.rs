//! The ingest service's CloudTrail `LookupEvents` source against a recorded fake of the API (a local
//! HTTP server speaking AWS JSON 1.1, no real AWS): it pages with `NextToken`, resumes each run from the
//! checkpoint it committed to Kafka (asking for `StartTime` = the latest event time produced), skips
//! what it already produced at that inclusive boundary, routes an unusable record to the dead letters,
//! and commits nothing of a poll whose paging fails, so that every event reaches the events topic
//! exactly once across runs.
#![allow(clippy::unwrap_used, clippy::print_stdout)] // test code: a panic is a failed test

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use grantwatch_e2e::cloudtrail_record;
use grantwatch_e2e::stack::Stack;
use grantwatch_types::{DeadLetter, DeadLetterSource, Event, EventTime};

const REGION: &str = "us-east-1";
const ACCOUNT: &str = "111122223333";
/// The `X-Amz-Target` the SDK sends (the service shape name and operation, as the model spells them).
const TARGET: &str = "CloudTrail_20131101.LookupEvents";
/// 2023-11-14T22:13:20Z, in seconds.
const BASE: i64 = 1_700_000_000;
const RUN_TIMEOUT: Duration = Duration::from_secs(120);

/// One event as LookupEvents returns it.
#[derive(Clone)]
struct Lookup {
    id: String,
    /// Seconds since the epoch.
    time: i64,
    source: String,
    name: String,
    /// The `CloudTrailEvent` string: the raw record.
    raw: String,
}

/// One request the fake received.
#[derive(Debug, Clone)]
struct Request {
    target: Option<String>,
    body: serde_json::Value,
}

impl Request {
    fn start_time(&self) -> Option<f64> {
        self.body.get("StartTime").and_then(serde_json::Value::as_f64)
    }
    fn next_token(&self) -> Option<&str> {
        self.body.get("NextToken").and_then(serde_json::Value::as_str)
    }
}

#[derive(Default)]
struct FakeState {
    /// What the API answers, page by page (newest first, as AWS does). Page `n` (0-based) is asked for
    /// with `NextToken` = `p{n}` (none for page 0); every page but the last names the next.
    pages: Vec<Vec<Lookup>>,
    /// A page answered with an internal error (HTTP 500) every time it is asked for.
    failing_page: Option<usize>,
    requests: Vec<Request>,
    errors: Vec<String>,
}

/// A CloudTrail LookupEvents endpoint on 127.0.0.1, served by a thread (one request per connection).
struct FakeCloudTrail {
    url: String,
    state: Arc<Mutex<FakeState>>,
}

impl FakeCloudTrail {
    fn start() -> FakeCloudTrail {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let state = Arc::new(Mutex::new(FakeState::default()));
        let shared = state.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                if let Err(e) = serve(conn, &shared) {
                    shared.lock().unwrap().errors.push(e.to_string());
                }
            }
        });
        FakeCloudTrail { url, state }
    }

    /// Events (any order) answered newest first, `per_page` a page.
    fn answer(&self, events: &[&Lookup], per_page: usize) {
        let mut sorted: Vec<Lookup> = events.iter().map(|e| (*e).clone()).collect();
        sorted.sort_by(|a, b| (b.time, &b.id).cmp(&(a.time, &a.id)));
        let pages = sorted.chunks(per_page).map(<[Lookup]>::to_vec).collect();
        let mut s = self.state.lock().unwrap();
        s.pages = pages;
        s.failing_page = None;
    }

    fn fail_page(&self, page: usize) {
        self.state.lock().unwrap().failing_page = Some(page);
    }

    /// The requests received since the last call.
    fn take_requests(&self) -> Vec<Request> {
        let mut s = self.state.lock().unwrap();
        assert!(s.errors.is_empty(), "the fake endpoint failed: {:?}", s.errors);
        std::mem::take(&mut s.requests)
    }
}

fn serve(conn: TcpStream, state: &Mutex<FakeState>) -> std::io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut request_line = String::new();
    if reader.read_line(&mut request_line)? == 0 {
        return Ok(()); // opened and closed without a request
    }
    let mut headers = BTreeMap::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line)?;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    let len: usize = headers.get("content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
    let mut body = vec![0; len];
    reader.read_exact(&mut body)?;
    let body: serde_json::Value = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
    let request = Request { target: headers.get("x-amz-target").cloned(), body };

    let (status, answer) = {
        let mut s = state.lock().unwrap();
        let page = match request.next_token() {
            None => Some(0),
            Some(t) => t.strip_prefix('p').and_then(|n| n.parse::<usize>().ok()),
        };
        let answer = match page {
            _ if request.target.as_deref() != Some(TARGET) || !request_line.starts_with("POST ") => (
                "400 Bad Request",
                serde_json::json!({"__type": "UnknownOperationException", "message": format!("{} {headers:?}", request_line.trim())}),
            ),
            Some(n) if s.failing_page == Some(n) => (
                "500 Internal Server Error",
                serde_json::json!({"__type": "InternalFailure", "message": "recorded failure"}),
            ),
            Some(n) if n < s.pages.len().max(1) => {
                let events: Vec<serde_json::Value> = s
                    .pages
                    .get(n)
                    .map(|p| {
                        p.iter()
                            .map(|e| {
                                serde_json::json!({
                                    "EventId": e.id,
                                    "EventName": e.name,
                                    "EventTime": e.time as f64,
                                    "EventSource": e.source,
                                    "ReadOnly": "true",
                                    "Username": "alice",
                                    "Resources": [],
                                    "CloudTrailEvent": e.raw,
                                })
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                let mut out = serde_json::json!({ "Events": events });
                if n + 1 < s.pages.len() {
                    out["NextToken"] = format!("p{}", n + 1).into();
                }
                ("200 OK", out)
            }
            _ => (
                "400 Bad Request",
                serde_json::json!({"__type": "InvalidNextTokenException", "message": "bad NextToken"}),
            ),
        };
        s.requests.push(request);
        answer
    };
    let payload = answer.to_string();
    let mut conn = conn;
    write!(
        conn,
        "HTTP/1.1 {status}\r\nContent-Type: application/x-amz-json-1.1\r\nx-amzn-RequestId: fake-{}\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{payload}",
        rand::random::<u32>(),
        payload.len()
    )?;
    conn.flush()?;
    let _ = conn.shutdown(std::net::Shutdown::Both);
    Ok(())
}

fn alice() -> serde_json::Value {
    serde_json::json!({
        "type": "IAMUser",
        "principalId": "AIDAEXAMPLEALICE",
        "arn": format!("arn:aws:iam::{ACCOUNT}:user/alice"),
        "accountId": ACCOUNT,
        "userName": "alice",
    })
}

/// An event of alice's, with its raw CloudTrail record.
fn event(id: &str, time: i64, source: &str, name: &str) -> Lookup {
    // The record's region and account are REGION and ACCOUNT (alice's).
    let raw = cloudtrail_record(id, &EventTime(time * 1000).to_rfc3339(), &alice(), source, name);
    Lookup { id: id.into(), time, source: source.into(), name: name.into(), raw }
}

/// Runs `grantwatch-ingest run --lookup-events --once` to completion (bounded: a hung SDK call fails
/// the test instead of hanging it).
fn poll_once(stack: &mut Stack, label: &str) -> std::process::ExitStatus {
    let env = [
        ("AWS_ACCESS_KEY_ID", "AKIDFAKE".to_string()),
        ("AWS_SECRET_ACCESS_KEY", "fake".to_string()),
        ("AWS_REGION", REGION.to_string()),
        ("AWS_EC2_METADATA_DISABLED", "true".to_string()),
        // Each poll re-reads this much before the newest event produced.
        ("GRANTWATCH_INGEST__LOOKUP_LAG_SECS", LAG_SECS.to_string()),
        // Nothing from the machine's AWS configuration.
        ("AWS_CONFIG_FILE", stack.path("no-aws-config").display().to_string()),
        ("AWS_SHARED_CREDENTIALS_FILE", stack.path("no-aws-credentials").display().to_string()),
    ];
    stack.spawn_ingest(label, &["--lookup-events", "--once"], &env);
    match stack.wait_exit(label, RUN_TIMEOUT) {
        Some(status) => status,
        None => {
            stack.kill(label);
            panic!("{label}: ingest still running after {RUN_TIMEOUT:?}; logs in {}", stack.dir.path().display());
        }
    }
}

/// The events topic, by uid, asserting no uid appears twice.
fn assert_polled(stack: &mut Stack, label: &str) {
    let status = poll_once(stack, label);
    assert!(status.success(), "{label}: ingest exited with {status}; logs in {}", stack.dir.path().display());
}

fn events_by_uid(stack: &Stack) -> BTreeMap<String, Event> {
    let mut by_uid = BTreeMap::new();
    for e in stack.read_json::<Event>(&stack.cfg.topics.events.name) {
        let uid = e.uid.clone();
        assert!(by_uid.insert(uid.clone(), e).is_none(), "event {uid} produced twice");
    }
    by_uid
}

fn uids(events: &BTreeMap<String, Event>) -> Vec<&str> {
    events.keys().map(String::as_str).collect()
}

const LAG_SECS: i64 = 60;

/// Asserts every request asked from `newest` (seconds) minus the configured lag.
fn assert_all_start_at(requests: &[Request], newest: i64, what: &str) {
    let seconds = newest - LAG_SECS;
    assert!(!requests.is_empty(), "{what}: no LookupEvents request");
    for r in requests {
        assert_eq!(r.start_time(), Some(seconds as f64), "{what}: StartTime of {:?}", r.body);
    }
}

#[test]
fn lookup_events_polls_pages_and_resumes_from_its_checkpoint() {
    let work = tempfile::tempdir().unwrap();
    let fake = FakeCloudTrail::start();
    let mut stack = Stack::new("lookup", 2, work.path());
    let mut toml = std::fs::read_to_string(&stack.config_path).unwrap();
    toml.push_str(&format!(
        "\n[[ingest.lookup_events]]\nregion = \"{REGION}\"\naccount = \"{ACCOUNT}\"\nendpoint_url = \"{}\"\n",
        fake.url
    ));
    std::fs::write(&stack.config_path, toml).unwrap();
    let alice_arn = format!("arn:aws:iam::{ACCOUNT}:user/alice");

    // 1. Three events over two pages (newest first). Nothing committed yet: no StartTime.
    let e1 = event("e1-0000-4000-8000-000000000001", BASE, "s3.amazonaws.com", "ListBuckets");
    let e2 = event("e2-0000-4000-8000-000000000002", BASE + 60, "iam.amazonaws.com", "GetUser");
    // The newest of the first run; its id sorts after e4's (same time, produced by the second run).
    let e3 = event("e3-0000-4000-8000-000000000003", BASE + 120, "ec2.amazonaws.com", "DescribeInstances");
    fake.answer(&[&e1, &e2, &e3], 2);
    assert_polled(&mut stack, "run-1");
    let requests = fake.take_requests();
    println!("run 1 requests: {requests:?}");
    assert_eq!(requests.len(), 2, "two pages, two requests: {requests:?}");
    assert!(requests.iter().all(|r| r.target.as_deref() == Some(TARGET)));
    assert!(requests.iter().all(|r| r.start_time().is_none()), "no checkpoint yet, yet a StartTime: {requests:?}");
    assert_eq!(requests[0].next_token(), None);
    assert_eq!(requests[1].next_token(), Some("p1"));
    let events = events_by_uid(&stack);
    assert_eq!(uids(&events), [&e1.id, &e2.id, &e3.id]);
    let actions = |id: &str| events[id].actions.clone();
    assert_eq!(actions(&e1.id), ["s3:ListAllMyBuckets"]);
    assert_eq!(actions(&e2.id), ["iam:GetUser"]);
    assert_eq!(actions(&e3.id), ["ec2:DescribeInstances"]);
    for (lookup, e) in [(&e1, &events[&e1.id]), (&e2, &events[&e2.id]), (&e3, &events[&e3.id])] {
        assert_eq!(e.actor.uid, alice_arn);
        assert_eq!(e.time, EventTime(lookup.time * 1000), "time of {}", lookup.id);
        assert_eq!(e.api.operation, lookup.name);
    }
    // Keyed by identity.
    let keys: Vec<Option<String>> = stack.read(&stack.cfg.topics.events.name).into_iter().map(|r| r.2).collect();
    assert!(keys.iter().all(|k| k.as_deref() == Some(alice_arn.as_str())), "keys: {keys:?}");
    assert!(stack.read(&stack.cfg.topics.dlq.name).is_empty());

    // 2. A restart: the same three plus two newer, one at exactly the checkpoint's time (the API's time
    // filter is inclusive: that one must be produced, e3 again must not).
    let e4 = event("a4-0000-4000-8000-000000000004", BASE + 120, "s3.amazonaws.com", "ListBuckets");
    let e5 = event("e5-0000-4000-8000-000000000005", BASE + 180, "sts.amazonaws.com", "GetCallerIdentity");
    fake.answer(&[&e1, &e2, &e3, &e4, &e5], 2);
    assert_polled(&mut stack, "run-2");
    let requests = fake.take_requests();
    println!("run 2 requests: {requests:?}");
    assert_eq!(requests.len(), 3, "three pages, three requests: {requests:?}");
    assert_all_start_at(&requests, e3.time, "run 2");
    let events = events_by_uid(&stack);
    assert_eq!(uids(&events), [&e4.id, &e1.id, &e2.id, &e3.id, &e5.id]);
    assert_eq!(events[&e4.id].actions, ["s3:ListAllMyBuckets"]);
    assert!(events[&e5.id].actions.is_empty(), "GetCallerIdentity needs no permission");
    assert!(stack.read(&stack.cfg.topics.dlq.name).is_empty());

    // 3. A record whose CloudTrailEvent is not JSON, then a good one after it: a dead letter naming the
    // region and event id, the good one produced, the run a success.
    let bad = Lookup {
        id: "bad0-0000-4000-8000-000000000006".into(),
        time: BASE + 240,
        source: "s3.amazonaws.com".into(),
        name: "ListBuckets".into(),
        raw: "{this is not json".into(),
    };
    let e7 = event("e7-0000-4000-8000-000000000007", BASE + 300, "iam.amazonaws.com", "ListUsers");
    fake.answer(&[&e1, &e2, &e3, &e4, &e5, &bad, &e7], 50);
    assert_polled(&mut stack, "run-3");
    let requests = fake.take_requests();
    assert_eq!(requests.len(), 1, "{requests:?}");
    assert_all_start_at(&requests, e5.time, "run 3");
    let events = events_by_uid(&stack);
    assert_eq!(uids(&events), [&e4.id, &e1.id, &e2.id, &e3.id, &e5.id, &e7.id]);
    assert_eq!(events[&e7.id].actions, ["iam:ListUsers"]);
    let dead: Vec<DeadLetter> = stack.read_json(&stack.cfg.topics.dlq.name);
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0].service, "grantwatch-ingest");
    assert_eq!(dead[0].source, DeadLetterSource::LookupEvents { region: REGION.into(), event_id: bad.id.clone() });
    assert_eq!(dead[0].payload, bad.raw);

    // 4. Two newer events over two pages, the second page failing (after the SDK's retries): the run
    // fails and commits nothing, not even the first page's event or a checkpoint past it.
    let e8 = event("e8-0000-4000-8000-000000000008", BASE + 360, "s3.amazonaws.com", "ListBuckets");
    let e9 = event("e9-0000-4000-8000-000000000009", BASE + 420, "iam.amazonaws.com", "GetUser");
    fake.answer(&[&e7, &e8, &e9], 1);
    fake.fail_page(1);
    let status = poll_once(&mut stack, "run-4");
    assert!(!status.success(), "a failed LookupEvents page, yet ingest exited with {status}");
    let requests = fake.take_requests();
    assert!(requests.len() >= 2, "{requests:?}");
    assert_all_start_at(&requests, e7.time, "run 4");
    assert_eq!(events_by_uid(&stack).len(), 6);

    // 5. The endpoint recovers: the next run starts over from e7's time and produces e8 and e9 once.
    fake.answer(&[&e7, &e8, &e9], 1);
    assert_polled(&mut stack, "run-5");
    let requests = fake.take_requests();
    assert_eq!(requests.len(), 3, "{requests:?}");
    assert_all_start_at(&requests, e7.time, "run 5");
    let events = events_by_uid(&stack);
    assert_eq!(uids(&events), [&e4.id, &e1.id, &e2.id, &e3.id, &e5.id, &e7.id, &e8.id, &e9.id]);

    // 6. Nothing new: the run asks from e9's time on and produces nothing, not even the dead letter again.
    assert_polled(&mut stack, "run-6");
    let requests = fake.take_requests();
    assert_all_start_at(&requests, e9.time, "run 6");
    assert_eq!(events_by_uid(&stack).len(), 8);
    assert_eq!(stack.read(&stack.cfg.topics.dlq.name).len(), 1);
}
