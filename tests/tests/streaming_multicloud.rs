//! The ingest service's pulled sources against recorded fakes of their APIs (`grantwatch_e2e::pulled`,
//! no real Okta or Google) and the real broker: the Okta System Log (pages by its `Link` cursor, a 429
//! waited out, the token sent as `SSWS` and never logged) and the Google Workspace Reports (windows
//! read whole, newest first, across page boundaries). The real `grantwatch-ingest` is killed with
//! SIGKILL mid-stream and restarted: every event reaches the events topic exactly once.
#![allow(clippy::unwrap_used, clippy::print_stdout)] // test code: a panic is a failed test

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use grantwatch_e2e::pulled::{FakeApis, okta_event, workspace_activity};
use grantwatch_e2e::stack::Stack;
use grantwatch_types::{Cloud, Event};

const OKTA_TOKEN: &str = "00okta-Secret-Token-do-not-log";
const WS_TOKEN: &str = "ya29.workspace-Secret-Token-do-not-log";
/// 2023-11-14T22:13:20Z.
const BASE_MS: i64 = 1_700_000_000_000;
const RUN_TIMEOUT: Duration = Duration::from_secs(180);

/// The events topic by uid, asserting none appears twice.
fn events_by_uid(stack: &Stack) -> BTreeMap<String, (Option<String>, Event)> {
    let mut out = BTreeMap::new();
    for (_, _, key, payload) in stack.read(&stack.cfg.topics.events.name) {
        let e: Event = serde_json::from_slice(&payload).unwrap();
        let uid = e.uid.clone();
        assert!(out.insert(uid.clone(), (key, e)).is_none(), "event {uid} produced twice");
    }
    out
}

fn run_to_end(stack: &mut Stack, label: &str, args: &[&str]) {
    stack.spawn_ingest(label, args, &[]);
    let status = stack.wait_exit(label, RUN_TIMEOUT).unwrap_or_else(|| {
        stack.kill(label);
        panic!("{label}: ingest still running after {RUN_TIMEOUT:?}; logs in {}", stack.dir.path().display())
    });
    assert!(status.success(), "{label}: ingest exited with {status}; logs in {}", stack.dir.path().display());
}

/// Starts `args`, waits until the fake has answered `requests` requests, and kills the ingest with
/// SIGKILL: mid-stream, with pages committed and pages to go.
fn kill_after(stack: &mut Stack, fake: &FakeApis, args: &[&str], requests: usize) {
    let before = fake.requests().len();
    stack.spawn_ingest("doomed", args, &[]);
    let deadline = Instant::now() + RUN_TIMEOUT;
    while fake.requests().len() < before + requests {
        assert!(Instant::now() < deadline, "the ingest never made {requests} requests");
        assert!(stack.wait_exit("doomed", Duration::ZERO).is_none(), "the ingest ended before it was killed");
        std::thread::sleep(Duration::from_millis(20));
    }
    stack.kill("doomed");
    // A request the killed process had in flight is counted before anyone reads the count.
    std::thread::sleep(Duration::from_millis(300));
}

/// No log line of any ingest run holds a token.
fn assert_no_token_logged(stack: &Stack) {
    for entry in std::fs::read_dir(stack.dir.path()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "log") {
            let text = std::fs::read_to_string(&path).unwrap();
            assert!(!text.contains(OKTA_TOKEN) && !text.contains(WS_TOKEN), "a token in {}", path.display());
        }
    }
}

fn append_config(stack: &Stack, text: &str) {
    let mut toml = std::fs::read_to_string(&stack.config_path).unwrap();
    // The `[ingest]` table is the stack's; its keys go right after its header.
    toml = toml.replacen("[ingest]\n", "[ingest]\napi_max_wait_secs = 5\npoll_interval_secs = 1\n", 1);
    toml.push_str(text);
    std::fs::write(&stack.config_path, toml).unwrap();
}

#[test]
fn okta_system_log_pages_reach_kafka_exactly_once_across_a_kill_and_a_rate_limit() {
    let work = tempfile::tempdir().unwrap();
    let fake = FakeApis::start(OKTA_TOKEN, WS_TOKEN);
    let mut stack = Stack::new("okta-pull", 2, work.path());
    let token_file = stack.path("okta-token");
    std::fs::write(&token_file, format!("{OKTA_TOKEN}\n")).unwrap();
    append_config(
        &stack,
        &format!(
            "[[ingest.okta]]\norg_url = \"{}\"\napi_token_file = \"{}\"\nsince = \"2023-11-14T00:00:00Z\"\nlimit = 5\n",
            fake.url,
            token_file.display()
        ),
    );
    // 48 events, 1 s apart, two of them in one millisecond; pages of 5; the third request throttled.
    let users = ["alice", "bob", "carol"];
    let mut events: Vec<serde_json::Value> = (0..48)
        .map(|i| okta_event(&format!("uuid-{i:03}"), BASE_MS + i * 1000, users[i as usize % 3], "user.session.start"))
        .collect();
    events[21]["published"] = events[20]["published"].clone();
    fake.with(|s| {
        s.okta_events = events.clone();
        s.page_delay = Duration::from_millis(150);
        s.throttle_request = Some(2);
        s.now_ms = BASE_MS + 86_400_000;
    });
    let args = ["--okta-logs", "--once"];

    // Killed after five answers (one of them the 429): some pages committed, most to go.
    kill_after(&mut stack, &fake, &args, 5);
    let partial = events_by_uid(&stack).len();
    println!("after the kill: {partial} events");
    assert!(partial < 48, "the kill came too late to be mid-stream");
    let before_restart = fake.requests().len();
    run_to_end(&mut stack, "okta-1", &args);
    let requests = fake.requests();
    // The restart resumed at its committed cursor (or from `since` when it had none yet).
    let resumed = &requests[before_restart];
    assert!(
        if partial > 0 { resumed.contains("after=c") } else { resumed.contains("since=") },
        "restart began with {resumed}"
    );
    let got = events_by_uid(&stack);
    assert_eq!(got.len(), 48, "{:?}", got.keys().collect::<Vec<_>>());
    let host = fake.url.trim_start_matches("http://").split(':').next().unwrap().to_string();
    for (uid, (key, e)) in &got {
        assert!(uid.starts_with("uuid-"), "{uid}");
        assert_eq!(e.cloud, Cloud::Okta);
        assert!(e.actor.uid.starts_with(&format!("okta:{host}/users/00u")), "{}", e.actor.uid);
        assert_eq!(key.as_deref(), Some(e.actor.uid.as_str()), "keyed by identity");
        assert_eq!(e.api.operation, "user.session.start");
    }
    fake.with(|s| {
        assert_eq!(s.throttled, 1);
        assert_eq!(s.unauthorized, 0, "every request carried SSWS and the token");
    });

    // Later events: a poll produces only those, from the cursor.
    let later: Vec<serde_json::Value> = (48..55)
        .map(|i| okta_event(&format!("uuid-{i:03}"), BASE_MS + i * 1000, "dave", "user.mfa.factor.deactivate"))
        .collect();
    fake.with(|s| s.okta_events.extend(later));
    let n = fake.requests().len();
    run_to_end(&mut stack, "okta-2", &args);
    assert!(fake.requests()[n].contains("after=c"), "{}", fake.requests()[n]);
    let got = events_by_uid(&stack);
    assert_eq!(got.len(), 55);
    assert!(stack.read(&stack.cfg.topics.dlq.name).is_empty());
    assert_no_token_logged(&stack);

    // An event Okta shows late (published before the newest produced) still comes through the cursor.
    fake.with(|s| s.okta_events.push(okta_event("uuid-100", BASE_MS + 30_500, "erin", "user.session.start")));
    run_to_end(&mut stack, "okta-3", &args);
    assert_eq!(events_by_uid(&stack).len(), 56);
}

#[test]
fn workspace_reports_windows_reach_kafka_exactly_once_across_a_kill() {
    let work = tempfile::tempdir().unwrap();
    let fake = FakeApis::start(OKTA_TOKEN, WS_TOKEN);
    let mut stack = Stack::new("ws-pull", 2, work.path());
    let token_file = stack.path("ws-token");
    std::fs::write(&token_file, WS_TOKEN).unwrap();
    append_config(
        &stack,
        &format!(
            "[[ingest.workspace]]\nbase_url = \"{}\"\ntoken_file = \"{}\"\nname = \"C03fake\"\n\
             applications = [\"login\", \"admin\"]\nstart_time = \"2023-11-14T22:00:00Z\"\n\
             window_secs = 300\nlag_secs = 60\nmax_results = 3\n",
            fake.url,
            token_file.display()
        ),
    );
    // 40 minutes of activity, every 50 s, per application; admin activities carry two events each;
    // some share a time (a page boundary between them).
    let mut activities = BTreeMap::new();
    for app in ["login", "admin"] {
        let list: Vec<serde_json::Value> = (0..48)
            .map(|i| {
                let names: &[&str] =
                    if app == "login" { &["login_success"] } else { &["ASSIGN_ROLE", "CHANGE_PASSWORD"] };
                let t = BASE_MS + (i / 2) * 100_000;
                workspace_activity(app, &format!("{app}-{i:03}"), t, "C03fake", &format!("1000{}", i % 4), names)
            })
            .collect();
        activities.insert(app.to_string(), list);
    }
    let expected = 48 + 48 * 2;
    fake.with(|s| {
        s.activities = activities.clone();
        s.page_delay = Duration::from_millis(100);
        s.throttle_request = Some(4);
        // The API's clock just after the last activity: the last window is not settled yet.
        s.now_ms = BASE_MS + 23 * 100_000 + 30_000;
    });
    let args = ["--workspace-reports", "--once"];

    kill_after(&mut stack, &fake, &args, 12);
    let partial = events_by_uid(&stack).len();
    println!("after the kill: {partial} events");
    assert!(partial < expected, "the kill came too late to be mid-stream");
    run_to_end(&mut stack, "ws-1", &args);
    let got = events_by_uid(&stack);
    assert_eq!(got.len(), expected, "{:?}", got.keys().collect::<Vec<_>>());
    for (uid, (key, e)) in &got {
        assert_eq!(e.cloud, Cloud::GoogleWorkspace, "{uid}");
        assert!(e.actor.uid.starts_with("workspace:C03fake/users/1000"), "{}", e.actor.uid);
        assert_eq!(key.as_deref(), Some(e.actor.uid.as_str()));
    }
    assert!(got.contains_key("admin-001:1") && got.contains_key("login-047:0"), "{:?}", got.keys().next());
    // Oldest first within each window, windows in order: each partition holds each application's
    // events in time order.
    let mut times: BTreeMap<(i32, String), Vec<i64>> = BTreeMap::new();
    for (p, _, _, payload) in stack.read(&stack.cfg.topics.events.name) {
        let e: Event = serde_json::from_slice(&payload).unwrap();
        times.entry((p, e.api.service.clone())).or_default().push(e.time.0);
    }
    for (k, t) in &times {
        assert!(t.windows(2).all(|w| w[0] <= w[1]), "{k:?} events out of order: {t:?}");
    }
    fake.with(|s| assert_eq!((s.throttled, s.unauthorized), (1, 0)));

    // A late activity (older than the newest produced, within the lag) and a new one: each once.
    fake.with(|s| {
        let login = s.activities.get_mut("login").unwrap();
        login.push(workspace_activity(
            "login",
            "login-late",
            BASE_MS + 23 * 100_000 - 40_000,
            "C03fake",
            "10009",
            &["login_failure"],
        ));
        login.push(workspace_activity("login", "login-new", BASE_MS + 25 * 100_000, "C03fake", "10009", &["logout"]));
        s.now_ms = BASE_MS + 26 * 100_000;
    });
    run_to_end(&mut stack, "ws-2", &args);
    let got = events_by_uid(&stack);
    assert_eq!(got.len(), expected + 2);
    assert!(got.contains_key("login-late:0") && got.contains_key("login-new:0"));
    assert!(stack.read(&stack.cfg.topics.dlq.name).is_empty());
    assert_no_token_logged(&stack);
}
