//! The access service end to end, in process: its HTTP API on a real socket, its RocksDB state, the
//! real SDK against moto's IAM, the audit log, and the audit topic on the real broker. Time is a
//! manual clock the tests move, so expiries, retries and backoff are exact.
#![allow(clippy::unwrap_used, clippy::print_stdout)] // test code: a panic is a failed test

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use grantwatch_access_service::Running;
use grantwatch_access_service::aws::AwsGrants;
use grantwatch_access_service::clock::ManualClock;
use grantwatch_access_service::config::{
    AuthConfig, AwsSection, KafkaSection, RateLimitConfig, SchedulerConfig, ServiceConfig,
};
use grantwatch_access_service::grants::{BoxFuture, CallError, Grants};
use grantwatch_e2e::moto::{self, MotoAccount, block_on};
use grantwatch_e2e::stack::{broker, repo};
use grantwatch_types::{AccessAuditEvent, EventTime, GrantAction, RevokeAction};
use serde_json::{Value, json};

const START: i64 = 1_800_000_000_000;

const TOKENS: [(&str, &str, &[&str]); 6] = [
    ("rita", "tok-rita", &["requester"]),
    ("dave", "tok-dave", &["requester"]),
    ("alice", "tok-alice", &["requester", "approver"]),
    ("bob", "tok-bob", &["approver"]),
    ("carol", "tok-carol", &["approver"]),
    ("root", "tok-root", &["admin"]),
];

/// AWS, with revocations that fail a given number of times first (the failure a throttled or
/// unreachable IAM gives), everything else passed to the real client.
struct Flaky {
    inner: AwsGrants,
    fail_revokes: AtomicU32,
}

impl Grants for Flaky {
    fn precheck<'a>(&'a self, a: &'a GrantAction) -> BoxFuture<'a, Result<Option<String>, CallError>> {
        self.inner.precheck(a)
    }
    fn install<'a>(&'a self, a: &'a GrantAction) -> BoxFuture<'a, Result<(), CallError>> {
        self.inner.install(a)
    }
    fn revoke<'a>(&'a self, a: &'a RevokeAction) -> BoxFuture<'a, Result<(), CallError>> {
        if self.fail_revokes.load(Ordering::SeqCst) > 0 {
            self.fail_revokes.fetch_sub(1, Ordering::SeqCst);
            return Box::pin(async { Err("Throttling: Rate exceeded (request id 0000-test)".to_string()) });
        }
        self.inner.revoke(a)
    }
}

struct Service {
    rt: tokio::runtime::Runtime,
    running: Option<Running>,
    clock: Arc<ManualClock>,
    account: MotoAccount,
    _dir: tempfile::TempDir,
    audit: PathBuf,
    topic: String,
    base: String,
    http: reqwest::blocking::Client,
}

struct Options {
    fail_revokes: u32,
    rate_limit: RateLimitConfig,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            fail_revokes: 0,
            rate_limit: RateLimitConfig {
                per_principal_burst: 1000.0,
                per_principal_per_sec: 1000.0,
                ..Default::default()
            },
        }
    }
}

impl Service {
    fn start(opts: Options) -> Service {
        let account = MotoAccount::new(&moto::endpoint());
        let iam = account.iam();
        block_on(async {
            let trust = json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow",
                "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}]});
            iam.create_role().role_name("app").assume_role_policy_document(trust.to_string()).send().await.unwrap();
            iam.create_user().user_name("dev").send().await.unwrap();
        });
        let dir = tempfile::tempdir().unwrap();
        let rules = dir.path().join("rules.toml");
        std::fs::write(
            &rules,
            format!(
                "[revocation]\nlease_secs = 60\nretry_base_secs = 10\nretry_cap_secs = 40\nalert_after_failures = 3\n\
                 [[rule]]\nname = \"test-account\"\naccounts = [\"{}\"]\napprovers = [\"alice\", \"bob\", \"carol\"]\n\
                 max_duration_secs = 3600\nauto_approve_low_risk = true\n",
                account.id
            ),
        )
        .unwrap();
        let tokens = dir.path().join("tokens.toml");
        let mut text = String::new();
        for (name, token, roles) in TOKENS {
            text += &format!(
                "[[token]]\nprincipal = {name:?}\nroles = {roles:?}\nsha256 = {:?}\n",
                grantwatch_access_service::auth::token_hash(token)
            );
        }
        std::fs::write(&tokens, text).unwrap();
        let topic = format!("grantwatch.access.test-{}", rand::random::<u32>());
        let audit = dir.path().join("audit/access.jsonl");
        let cfg = ServiceConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            state_dir: dir.path().join("state"),
            audit_log: audit.clone(),
            rules,
            auth: AuthConfig { tokens_file: Some(tokens), oidc: None },
            rate_limit: opts.rate_limit,
            kafka: Some(KafkaSection {
                bootstrap_servers: broker(),
                properties: Default::default(),
                topic: topic.clone(),
                partitions: 1,
                replication_factor: 1,
            }),
            aws: AwsSection::default(),
            scheduler: SchedulerConfig::default(),
        };
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let clock = ManualClock::new(EventTime(START));
        let grants = Arc::new(Flaky {
            inner: AwsGrants::from_sdk_config(&account.sdk_config(), Duration::from_secs(20)).unwrap(),
            fail_revokes: AtomicU32::new(opts.fail_revokes),
        });
        let running = rt.block_on(grantwatch_access_service::start(&cfg, clock.clone(), grants)).unwrap();
        let base = format!("http://{}", running.addr);
        Service {
            rt,
            running: Some(running),
            clock,
            account,
            _dir: dir,
            audit,
            topic,
            base,
            http: reqwest::blocking::Client::new(),
        }
    }

    fn call(&self, who: &str, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let token = TOKENS.iter().find(|t| t.0 == who).map_or(who, |t| t.1);
        let mut req = self.http.request(method.parse().unwrap(), format!("{}{path}", self.base)).bearer_auth(token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().unwrap_or(Value::Null))
    }

    fn ok(&self, who: &str, method: &str, path: &str, body: Option<Value>) -> Value {
        let (status, v) = self.call(who, method, path, body);
        assert!((200..300).contains(&status), "{method} {path} as {who}: {status} {v}");
        v
    }

    fn role_arn(&self) -> String {
        format!("arn:aws:iam::{}:role/app", self.account.id)
    }

    fn request(&self, who: &str, actions: &[(&str, &str)], secs: u64) -> (u16, Value) {
        let grants: Vec<Value> = actions.iter().map(|(a, r)| json!({"action": a, "resources": [r]})).collect();
        self.call(
            who,
            "POST",
            "/v1/requests",
            Some(json!({
                "identity": {"kind": "iam_role", "arn": self.role_arn()},
                "access": {"kind": "actions", "grants": grants},
                "duration_secs": secs,
                "justification": "incident INC-7: read the failed job's output",
                "ticket": "INC-7",
            })),
        )
    }

    fn show(&self, id: &str) -> Value {
        self.ok("root", "GET", &format!("/v1/requests/{id}"), None)
    }

    fn wait_for(&self, id: &str, what: &str, cond: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let v = self.show(id);
            if cond(&v["request"]) {
                return v;
            }
            assert!(Instant::now() < deadline, "{id} never became {what}: {v}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn role_policy(&self, id: &str) -> Option<Value> {
        let iam = self.account.iam();
        let name = format!("grantwatch-access-{id}");
        block_on(async {
            match iam.get_role_policy().role_name("app").policy_name(&name).send().await {
                Ok(out) => {
                    let text = out.policy_document();
                    let decoded = percent_decode(text);
                    Some(serde_json::from_str(&decoded).unwrap())
                }
                Err(e) if e.as_service_error().is_some_and(|e| e.is_no_such_entity_exception()) => None,
                Err(e) => panic!("GetRolePolicy: {e:?}"),
            }
        })
    }

    /// The audit log, checked line by line against the schema.
    fn audit_log(&self) -> Vec<AccessAuditEvent> {
        let schema = grantwatch_e2e_common_schema();
        std::fs::read_to_string(&self.audit)
            .unwrap_or_default()
            .lines()
            .map(|l| {
                let v: Value = serde_json::from_str(l).unwrap();
                if let Err(e) = schema.validate(&v) {
                    panic!("audit line does not match schemas/access_event.v1.json: {e}\n{l}");
                }
                serde_json::from_value(v).unwrap()
            })
            .collect()
    }

    fn wait_audit(&self, id: &str, command: &str) -> Vec<AccessAuditEvent> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let log = self.audit_log();
            if log.iter().any(|e| e.transition.request_id == id && e.transition.command.as_str() == command) {
                return log;
            }
            assert!(Instant::now() < deadline, "no {command} of {id} in the audit log");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn stop(&mut self) {
        if let Some(r) = self.running.take() {
            self.rt.block_on(r.shutdown());
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.stop();
    }
}

fn grantwatch_e2e_common_schema() -> jsonschema::Validator {
    let schema: Value =
        serde_json::from_str(&std::fs::read_to_string(repo().join("schemas/access_event.v1.json")).unwrap()).unwrap();
    jsonschema::validator_for(&schema).unwrap()
}

/// IAM returns policy documents URL-encoded.
fn percent_decode(s: &str) -> String {
    if !s.contains('%') {
        return s.to_string();
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Ok(b) = u8::from_str_radix(&s[i + 1..i + 3], 16)
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(if bytes[i] == b'+' { b' ' } else { bytes[i] });
        i += 1;
    }
    String::from_utf8(out).unwrap()
}

fn commands(log: &[AccessAuditEvent], id: &str) -> Vec<String> {
    log.iter().filter(|e| e.transition.request_id == id).map(|e| e.transition.command.as_str().to_string()).collect()
}

fn time(v: &Value) -> EventTime {
    EventTime::parse_rfc3339(v.as_str().unwrap()).unwrap()
}

#[test]
fn a_grant_lives_through_the_api_is_installed_with_its_time_lock_and_expires_once() {
    let svc = Service::start(Options::default());
    let (status, r) = svc.request("rita", &[("s3:PutObject", "arn:aws:s3:::job-output/*")], 600);
    assert_eq!(status, 201, "{r}");
    assert_eq!(
        (r["state"].as_str(), r["risk"].as_str(), r["approvals_required"].as_u64()),
        (Some("pending"), Some("medium"), Some(1))
    );
    let id = r["request"]["id"].as_str().unwrap().to_string();
    assert_eq!(r["request"]["requester"], "rita", "the requester is the token's principal");

    // A requester is not an approver; an approver of the rule approves, and the grant is installed.
    let (status, e) = svc.call("rita", "POST", &format!("/v1/requests/{id}/approve"), Some(json!({})));
    assert_eq!((status, e["error"].as_str()), (403, Some("forbidden")), "{e}");
    assert!(svc.role_policy(&id).is_none());
    let r = svc.ok("bob", "POST", &format!("/v1/requests/{id}/approve"), Some(json!({"reason": "on call"})));
    assert_eq!(r["state"], "active", "{r}");
    let expires = time(&r["revoke"]["expires_at"]);
    assert_eq!(expires, EventTime(START + 600_000));
    let doc = svc.role_policy(&id).expect("the inline policy is installed");
    let st = &doc["Statement"][0];
    assert_eq!((st["Effect"].as_str(), st["Action"].clone()), (Some("Allow"), json!(["s3:PutObject"])), "{doc}");
    assert_eq!(st["Resource"], json!(["arn:aws:s3:::job-output/*"]));
    assert_eq!(st["Condition"]["DateLessThan"]["aws:CurrentTime"], expires.to_rfc3339(), "the second lock: {doc}");

    // Visibility: a requester sees their own requests only.
    let mine = svc.ok("rita", "GET", "/v1/requests?state=active", None);
    assert_eq!(mine["requests"].as_array().unwrap().len(), 1);
    assert!(svc.ok("dave", "GET", "/v1/requests", None)["requests"].as_array().unwrap().is_empty());
    assert_eq!(svc.call("dave", "GET", &format!("/v1/requests/{id}"), None).0, 404);

    // Not a moment early; then revoked once the deadline passes.
    svc.clock.set(EventTime(START + 599_000));
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(svc.show(&id)["request"]["state"], "active");
    assert!(svc.role_policy(&id).is_some());
    svc.clock.set(EventTime(START + 601_000));
    let v = svc.wait_for(&id, "expired", |r| r["state"] == "expired");
    assert!(svc.role_policy(&id).is_none(), "the policy is gone from IAM");
    let log: Vec<&str> = v["log"].as_array().unwrap().iter().map(|t| t["command"].as_str().unwrap()).collect();
    assert_eq!(log, ["submit", "approve", "activate", "claim", "expire"]);
    assert_eq!(v["log"][1]["by"], "bob");
    assert_eq!(v["log"][1]["reason"], "on call");

    // The audit log and the topic: every transition once, in order, with who approved.
    let audit = svc.wait_audit(&id, "expire");
    assert_eq!(commands(&audit, &id), log);
    let seqs: Vec<u64> = audit.iter().map(|e| e.audit_seq).collect();
    assert_eq!(seqs, (0..audit.len() as u64).collect::<Vec<_>>(), "numbered without gaps");
    let expire = audit.iter().find(|e| e.transition.command.as_str() == "expire").unwrap();
    assert_eq!(expire.approvals[0].approver, "bob");
    assert_eq!(expire.expires_at, Some(expires));
    assert_eq!(expire.ticket.as_deref(), Some("INC-7"));
    let deadline = Instant::now() + Duration::from_secs(30);
    let on_topic = loop {
        let mut events = read_topic(&svc.topic);
        events.sort_by_key(|e| e.audit_seq);
        events.dedup_by_key(|e| e.audit_seq);
        if events.len() >= audit.len() || Instant::now() > deadline {
            break events;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(on_topic, audit, "the topic carries the audit log");
}

fn read_topic(topic: &str) -> Vec<AccessAuditEvent> {
    use grantwatch_runtime::kafka::client::read_to_end;
    use rdkafka::Offset;
    let kafka = grantwatch_runtime::kafka::config::KafkaConfig { bootstrap_servers: broker(), ..Default::default() };
    let mut out = Vec::new();
    let _ = read_to_end(&kafka, topic, &[0], Offset::Beginning, None, &mut |_, _, _, v| {
        out.push(serde_json::from_slice(v.unwrap_or_default()).unwrap());
        Ok(())
    });
    out
}

#[test]
fn approvals_follow_the_rules_self_approval_is_refused_and_high_risk_needs_two() {
    let svc = Service::start(Options::default());
    // alice may approve, but not her own request.
    let (_, r) = svc.request("alice", &[("s3:PutObject", "arn:aws:s3:::a/*")], 60);
    let id = r["request"]["id"].as_str().unwrap().to_string();
    let (status, e) = svc.call("alice", "POST", &format!("/v1/requests/{id}/approve"), None);
    assert_eq!(status, 403, "{e}");
    assert!(e["message"].as_str().unwrap().contains("you requested this access"), "{e}");
    assert_eq!(svc.show(&id)["request"]["state"], "pending");

    // iam:PassRole is permissions management: high risk, two distinct approvers.
    let (_, r) = svc.request("rita", &[("iam:PassRole", &svc.role_arn())], 600);
    let id = r["request"]["id"].as_str().unwrap().to_string();
    assert_eq!((r["risk"].as_str(), r["approvals_required"].as_u64()), (Some("high"), Some(2)));
    let r = svc.ok("bob", "POST", &format!("/v1/requests/{id}/approve"), None);
    assert_eq!(r["state"], "pending", "one approval is not enough");
    assert!(svc.role_policy(&id).is_none());
    let (status, _) = svc.call("bob", "POST", &format!("/v1/requests/{id}/approve"), None);
    assert_eq!(status, 409, "the same approver twice");
    let r = svc.ok("carol", "POST", &format!("/v1/requests/{id}/approve"), None);
    assert_eq!(r["state"], "active");
    assert!(svc.role_policy(&id).is_some());

    // Taken back early by its requester: removed now, ends revoked.
    let (status, _) = svc.call("rita", "POST", &format!("/v1/requests/{id}/revoke"), Some(json!({"reason": ""})));
    assert_eq!(status, 400, "a reason is required");
    svc.ok("rita", "POST", &format!("/v1/requests/{id}/revoke"), Some(json!({"reason": "done early"})));
    svc.wait_for(&id, "revoked", |r| r["state"] == "revoked");
    assert!(svc.role_policy(&id).is_none());

    // Low-risk reads are approved by the rule at once; deny and cancel end pending requests.
    let (status, r) = svc.request("rita", &[("s3:GetObject", "arn:aws:s3:::a/*")], 60);
    assert_eq!((status, r["state"].as_str()), (201, Some("active")), "{r}");
    assert_eq!(r["approvals"].as_array().unwrap().len(), 0, "approved by the rule, not a person");
    let (_, r) = svc.request("rita", &[("s3:PutObject", "arn:aws:s3:::a/*")], 60);
    let id = r["request"]["id"].as_str().unwrap().to_string();
    let r = svc.ok("bob", "POST", &format!("/v1/requests/{id}/deny"), Some(json!({"reason": "use the pipeline"})));
    assert_eq!(r["state"], "denied");
    assert_eq!(svc.call("carol", "POST", &format!("/v1/requests/{id}/approve"), None).0, 409, "denied is final");
}

#[test]
fn a_failing_revocation_is_retried_with_backoff_alerted_and_the_condition_still_ends_the_grant() {
    let svc = Service::start(Options { fail_revokes: 3, ..Options::default() });
    let (_, r) = svc.request("rita", &[("s3:GetObject", "arn:aws:s3:::logs/*")], 300);
    assert_eq!(r["state"], "active", "{r}");
    let id = r["request"]["id"].as_str().unwrap().to_string();
    let expires = time(&r["revoke"]["expires_at"]);

    svc.clock.set(EventTime(expires.0 + 1000));
    let v = svc.wait_for(&id, "failed once", |r| r["revoke"]["failures"] == 1);
    let due = time(&v["request"]["revoke"]["due_at"]);
    assert_eq!(due, EventTime(expires.0 + 1000 + 10_000), "retried after the base backoff");
    assert_eq!(v["request"]["state"], "active");
    // Removal failed, and the grant is still in IAM: its time condition is what ends it now.
    let doc = svc.role_policy(&id).expect("still installed");
    assert_eq!(doc["Statement"][0]["Condition"]["DateLessThan"]["aws:CurrentTime"], expires.to_rfc3339());

    svc.clock.set(due);
    let v = svc.wait_for(&id, "failed twice", |r| r["revoke"]["failures"] == 2);
    assert_eq!(time(&v["request"]["revoke"]["due_at"]), EventTime(due.0 + 20_000), "doubled");
    assert_eq!(v["request"]["revoke"]["alert"], false);
    svc.clock.set(EventTime(due.0 + 20_000));
    let v = svc.wait_for(&id, "alerting", |r| r["revoke"]["failures"] == 3);
    assert_eq!(v["request"]["revoke"]["alert"], true, "three failures raise the alert");
    assert!(v["request"]["revoke"]["last_error"].as_str().unwrap().contains("Throttling"));
    let metrics = svc.http.get(format!("{}/metrics", svc.base)).send().unwrap().text().unwrap();
    assert!(metrics.contains("grantwatch_access_revoke_alerts_total 1"), "{metrics}");
    let audit = svc.wait_audit(&id, "revoke_failed");
    assert!(audit.iter().any(|e| e.transition.request_id == id && e.alert), "the SIEM sees the alert");

    // The fourth attempt succeeds (cap 40 s).
    let retry = time(&v["request"]["revoke"]["due_at"]);
    assert_eq!(retry.0 - (due.0 + 20_000), 40_000);
    svc.clock.set(retry);
    let v = svc.wait_for(&id, "expired", |r| r["state"] == "expired");
    assert!(svc.role_policy(&id).is_none());
    let log: Vec<&str> = v["log"].as_array().unwrap().iter().map(|t| t["command"].as_str().unwrap()).collect();
    assert_eq!(
        log,
        [
            "submit",
            "approve",
            "activate",
            "claim",
            "revoke_failed",
            "claim",
            "revoke_failed",
            "claim",
            "revoke_failed",
            "claim",
            "expire"
        ]
    );
}

#[test]
fn bad_input_and_bad_callers_get_clear_refusals() {
    let mut limited = Options::default();
    limited.rate_limit.per_principal_burst = 5.0;
    limited.rate_limit.per_principal_per_sec = 0.001;
    let svc = Service::start(limited);
    let post = |body: Value| svc.call("alice", "POST", "/v1/requests", Some(body));
    let base = || {
        json!({"identity": {"kind": "iam_role", "arn": svc.role_arn()},
               "access": {"kind": "actions", "grants": [{"action": "s3:GetObject", "resources": ["*"]}]},
               "duration_secs": 60, "justification": "x"})
    };
    let mut b = base();
    b["access"]["grants"][0]["action"] = json!("s3:GetObjekt");
    let (status, e) = post(b);
    assert_eq!(status, 400);
    assert!(e["message"].as_str().unwrap().contains("s3:GetObjekt"), "{e}");
    let mut b = base();
    b["duration_secs"] = json!(7200);
    let (status, e) = post(b);
    assert!(status == 400 && e["message"].as_str().unwrap().contains("maximum"), "{status} {e}");
    let mut b = base();
    b["admin"] = json!(true);
    assert_eq!(post(b).0, 400, "unknown fields are refused");
    // Rate limit: the fourth request of alice's burst of five... is the fifth; the sixth is refused.
    let (status, _) = post(base());
    assert_eq!(status, 201);
    let (status, _) = svc.call("alice", "GET", "/v1/whoami", None);
    assert_eq!(status, 200);
    let resp = svc.http.get(format!("{}/v1/whoami", svc.base)).bearer_auth("tok-alice").send().unwrap();
    assert_eq!(resp.status().as_u16(), 429);
    assert!(resp.headers().get("retry-after").is_some());
    // Other callers have their own budget; no or a wrong token is 401.
    assert_eq!(svc.call("bob", "GET", "/v1/whoami", None).0, 200);
    let resp = svc.http.get(format!("{}/v1/requests", svc.base)).send().unwrap();
    assert_eq!(resp.status().as_u16(), 401);
    assert_eq!(resp.headers()["www-authenticate"], "Bearer");
    assert_eq!(svc.call("tok-nobody", "GET", "/v1/requests", None).0, 401);
    // A body over 64 KiB.
    let mut b = base();
    b["justification"] = json!("x".repeat(70_000));
    assert_eq!(svc.call("dave", "POST", "/v1/requests", Some(b)).0, 413);
    // Nothing was stored by the refused requests.
    assert_eq!(svc.ok("root", "GET", "/v1/requests", None)["requests"].as_array().unwrap().len(), 1);
}

#[test]
fn the_cli_requests_approves_lists_and_shows_through_the_api() {
    let svc = Service::start(Options::default());
    let gw = grantwatch_e2e::stack::service_bin("grantwatch");
    let token_file = svc._dir.path().join("bob.token");
    std::fs::write(&token_file, "tok-bob\n").unwrap();
    let run = |token: Option<&str>, args: &[&str]| {
        let mut c = std::process::Command::new(&gw);
        c.arg("access").args(["--url", &svc.base]).args(args).env_remove("GRANTWATCH_ACCESS_TOKEN");
        match token {
            Some(t) => c.env("GRANTWATCH_ACCESS_TOKEN", t),
            None => c.arg("--token-file").arg(&token_file),
        };
        let out = c.output().unwrap();
        let (stdout, stderr) = (String::from_utf8(out.stdout).unwrap(), String::from_utf8(out.stderr).unwrap());
        assert!(!stdout.contains("tok-") && !stderr.contains("tok-"), "a token was printed");
        (out.status.success(), stdout, stderr)
    };
    let role = svc.role_arn();
    let (ok, out, err) = run(
        Some("tok-rita"),
        &[
            "request",
            "--identity",
            &role,
            "--action",
            "s3:PutObject=arn:aws:s3:::cli/*",
            "--duration",
            "10m",
            "--justification",
            "cli test",
            "--ticket",
            "CHG-9",
            "--id",
            "cli-1",
        ],
    );
    assert!(ok, "{err}");
    assert!(out.starts_with("cli-1 is pending (risk medium, 0/1 approvals)"), "{out}");
    let (ok, _, err) = run(Some("tok-rita"), &["approve", "cli-1"]);
    assert!(!ok && err.contains("403"), "a requester cannot approve: {err}");
    let (ok, out, err) = run(None, &["approve", "cli-1", "--reason", "looks right"]);
    assert!(ok, "{err}");
    assert!(out.starts_with("cli-1 is active (risk medium, 1/1 approvals), expires "), "{out}");
    assert!(svc.role_policy("cli-1").is_some());
    let (ok, out, _) = run(Some("tok-rita"), &["list", "--json"]);
    assert!(ok);
    let listed: Vec<Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(listed.len(), 1);
    assert_eq!((listed[0]["request"]["id"].as_str(), listed[0]["state"].as_str()), (Some("cli-1"), Some("active")));
    let (ok, out, _) = run(Some("tok-rita"), &["list"]);
    assert!(ok && out.lines().nth(1).unwrap().starts_with("cli-1 "), "{out}");
    let (ok, out, _) = run(Some("tok-rita"), &["show", "cli-1"]);
    assert!(ok);
    let shown: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(shown["log"].as_array().unwrap().len(), 3, "{shown}");
    assert_eq!(shown["request"]["request"]["ticket"], "CHG-9");
    let (ok, _, err) = run(Some("tok-rita"), &["revoke", "cli-1", "--reason", "done"]);
    assert!(ok, "{err}");
    svc.wait_for("cli-1", "revoked", |r| r["state"] == "revoked");
    let (ok, _, err) = run(Some("tok-rita"), &["show", "../admin"]);
    assert!(!ok && err.contains("request id"), "{err}");
}
