//! The access service as deployed: the `grantwatch-access` binary with the wall clock, killed with
//! SIGKILL while its grants are active, left down past every deadline, and started again. Every grant
//! is revoked once after the restart; the audit log and topic hold every transition, once in the log.
#![allow(clippy::unwrap_used, clippy::print_stdout)] // test code: a panic is a failed test

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use grantwatch_e2e::moto::{self, MotoAccount, block_on};
use grantwatch_e2e::stack::{broker, service_bin};
use grantwatch_types::{AccessAuditEvent, EventTime};
use serde_json::{Value, json};

const TOKEN: &str = "tok-rita-restart";
const GRANTS: usize = 12;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn start(config: &Path, account: &MotoAccount, log: &Path) -> Child {
    let log = std::fs::OpenOptions::new().create(true).append(true).open(log).unwrap();
    Command::new(service_bin("grantwatch-access"))
        .args(["serve", "--config"])
        .arg(config)
        .envs(account.env())
        .env("GRANTWATCH_LOG", "info")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap()
}

fn wait_healthy(base: &str, child: &mut Child) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while reqwest::blocking::get(format!("{base}/healthz")).map(|r| r.status().as_u16()).ok() != Some(200) {
        assert!(child.try_wait().unwrap().is_none(), "grantwatch-access exited at start");
        assert!(Instant::now() < deadline, "grantwatch-access did not come up");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn inline_policies(account: &MotoAccount) -> Vec<String> {
    let iam = account.iam();
    block_on(async { iam.list_role_policies().role_name("app").send().await.unwrap().policy_names().to_vec() })
}

#[test]
fn grants_that_fall_due_while_the_service_is_killed_are_revoked_once_after_restart() {
    let account = MotoAccount::new(&moto::endpoint());
    let iam = account.iam();
    block_on(async {
        let trust = json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow",
            "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}]});
        iam.create_role().role_name("app").assume_role_policy_document(trust.to_string()).send().await.unwrap();
    });
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(
        d.join("rules.toml"),
        format!(
            "[[rule]]\nname = \"all\"\naccounts = [\"{}\"]\napprovers = [\"bob\"]\nmax_duration_secs = 3600\n\
             auto_approve_low_risk = true\n",
            account.id
        ),
    )
    .unwrap();
    std::fs::write(
        d.join("tokens.toml"),
        format!(
            "[[token]]\nprincipal = \"rita\"\nroles = [\"requester\", \"approver\"]\nsha256 = {:?}\n",
            grantwatch_access_service::auth::token_hash(TOKEN)
        ),
    )
    .unwrap();
    let port = free_port();
    let topic = format!("grantwatch.access.restart-{}", rand::random::<u32>());
    std::fs::write(
        d.join("access.toml"),
        format!(
            "listen = \"127.0.0.1:{port}\"\nstate_dir = \"state\"\naudit_log = \"audit.jsonl\"\nrules = \"rules.toml\"\n\
             [auth]\ntokens_file = \"tokens.toml\"\n[kafka]\nbootstrap_servers = {:?}\ntopic = {topic:?}\npartitions = 1\n\
             [aws]\nendpoint_url = {:?}\nregion = \"us-east-1\"\n",
            broker(),
            account.endpoint
        ),
    )
    .unwrap();
    let config = d.join("access.toml");
    let log = d.join("service.log");
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::blocking::Client::new();

    let mut child = start(&config, &account, &log);
    wait_healthy(&base, &mut child);
    let mut expiries = BTreeMap::new();
    for i in 0..GRANTS {
        let body = json!({
            "id": format!("restart-{i}"),
            "identity": {"kind": "iam_role", "arn": format!("arn:aws:iam::{}:role/app", account.id)},
            "access": {"kind": "actions", "grants": [{"action": "s3:GetObject", "resources": [format!("arn:aws:s3:::bucket-{i}/*")]}]},
            "duration_secs": 3,
            "justification": "restart test",
        });
        let r: Value =
            http.post(format!("{base}/v1/requests")).bearer_auth(TOKEN).json(&body).send().unwrap().json().unwrap();
        assert_eq!(r["state"], "active", "{r}");
        expiries.insert(
            format!("restart-{i}"),
            EventTime::parse_rfc3339(r["revoke"]["expires_at"].as_str().unwrap()).unwrap(),
        );
    }
    assert_eq!(inline_policies(&account).len(), GRANTS);
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();

    // Down past every deadline: nothing revokes meanwhile.
    std::thread::sleep(Duration::from_millis(4500));
    assert_eq!(inline_policies(&account).len(), GRANTS, "nobody revoked while the service was down");

    let mut child = start(&config, &account, &log);
    wait_healthy(&base, &mut child);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let r: Value =
            http.get(format!("{base}/v1/requests?state=expired")).bearer_auth(TOKEN).send().unwrap().json().unwrap();
        if r["requests"].as_array().unwrap().len() == GRANTS {
            break;
        }
        assert!(Instant::now() < deadline, "not every grant expired after the restart: {r}");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(inline_policies(&account).is_empty(), "every grant's policy is gone from IAM");

    // The audit log: each transition once, numbered without gaps, one expiry per grant, at or after
    // its deadline. The topic holds every audit_seq (at least once).
    let audit_seqs_and_log = || -> Vec<AccessAuditEvent> {
        std::fs::read_to_string(d.join("audit.jsonl"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let audit = loop {
        let a = audit_seqs_and_log();
        if a.iter().filter(|e| e.transition.command.as_str() == "expire").count() == GRANTS {
            break a;
        }
        assert!(Instant::now() < deadline, "the audit log misses expiries");
        std::thread::sleep(Duration::from_millis(100));
    };
    let seqs: Vec<u64> = audit.iter().map(|e| e.audit_seq).collect();
    assert_eq!(seqs, (0..audit.len() as u64).collect::<Vec<_>>(), "gap-free, no duplicates");
    for (id, expires) in &expiries {
        let expired: Vec<_> = audit
            .iter()
            .filter(|e| &e.transition.request_id == id && e.transition.command.as_str() == "expire")
            .collect();
        assert_eq!(expired.len(), 1, "{id} expired once");
        assert!(expired[0].transition.at >= *expires, "{id} revoked before its deadline");
    }
    let kafka = grantwatch_runtime::kafka::config::KafkaConfig { bootstrap_servers: broker(), ..Default::default() };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut on_topic = Vec::new();
        let _ = grantwatch_runtime::kafka::client::read_to_end(
            &kafka,
            &topic,
            &[0],
            rdkafka::Offset::Beginning,
            None,
            &mut |_, _, _, v| {
                on_topic.push(serde_json::from_slice::<AccessAuditEvent>(v.unwrap_or_default()).unwrap().audit_seq);
                Ok(())
            },
        );
        on_topic.sort_unstable();
        on_topic.dedup();
        if on_topic == seqs {
            break;
        }
        assert!(Instant::now() < deadline, "the topic has {on_topic:?}, the log {seqs:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(!text.contains(&account.secret_key) && !text.contains(TOKEN), "a secret reached the log");

    // SIGTERM: a clean stop.
    Command::new("kill").arg("-TERM").arg(child.id().to_string()).status().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "no clean stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    }
}
