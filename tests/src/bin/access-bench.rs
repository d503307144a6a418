#![allow(clippy::print_stdout, clippy::unwrap_used)]
//! Permissions-on-demand benchmark (`scripts/bench-ondemand`, docs/benchmarks.md "Permissions on
//! demand"): the `grantwatch-access` binary (wall clock, RocksDB, audit log) against moto's IAM.
//!
//! * `expiry`: `--grants` active grants (read-only, auto-approved, installed in moto) on `--roles`
//!   roles, with deadlines spread evenly over `--spread` seconds; then how late each was revoked:
//!   the audit log's `expire` time minus the grant's `expires_at` (the service records the outcome
//!   after IAM answered, so the lag includes the DeleteRolePolicy call).
//! * `api`: `--requests` API calls at once (each its own connection), as many principals as
//!   `--principals`: submissions of medium-risk requests (validated, stored, logged, no AWS call),
//!   then approvals of all of them (each installs its grant in moto); latency percentiles and errors.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use grantwatch_e2e::moto::{self, MotoAccount, block_on};
use grantwatch_types::{AccessAuditEvent, EventTime};
use serde_json::{Value, json};

#[derive(Parser)]
struct Args {
    /// The service binary.
    #[arg(long)]
    bin: PathBuf,
    /// Work directory (state, audit log, service log).
    #[arg(long)]
    dir: PathBuf,
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Subcommand)]
enum Mode {
    Expiry {
        #[arg(long, default_value_t = 10_000)]
        grants: usize,
        #[arg(long, default_value_t = 100)]
        roles: usize,
        #[arg(long, default_value_t = 60)]
        spread: u64,
        /// Seconds from the start until the first deadline (time to install every grant).
        #[arg(long, default_value_t = 240)]
        setup: u64,
        #[arg(long, default_value_t = 32)]
        concurrency: usize,
    },
    Api {
        #[arg(long, default_value_t = 1000)]
        requests: usize,
        #[arg(long, default_value_t = 10)]
        principals: usize,
    },
}

struct Service {
    child: Child,
    base: String,
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
        let _ = self.child.wait();
    }
}

fn token(i: usize) -> String {
    format!("bench-token-{i:04}")
}

fn start(bin: &Path, dir: &Path, account: &MotoAccount, principals: usize) -> Result<Service> {
    std::fs::create_dir_all(dir)?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    std::fs::write(
        dir.join("rules.toml"),
        format!(
            "[[rule]]\nname = \"bench\"\naccounts = [\"{}\"]\napprovers = [\"group:approvers\"]\nmax_duration_secs = 86400\nauto_approve_low_risk = true\n",
            account.id
        ),
    )?;
    let mut tokens = String::new();
    for i in 0..principals {
        tokens += &format!(
            "[[token]]\nprincipal = \"p{i}\"\nroles = [\"requester\", \"approver\"]\ngroups = [\"approvers\"]\nsha256 = {:?}\n",
            grantwatch_access_service::auth::token_hash(&token(i))
        );
    }
    std::fs::write(dir.join("tokens.toml"), tokens)?;
    std::fs::write(
        dir.join("access.toml"),
        format!(
            "listen = \"127.0.0.1:{port}\"\nstate_dir = \"state\"\naudit_log = \"audit.jsonl\"\nrules = \"rules.toml\"\n\
             [auth]\ntokens_file = \"tokens.toml\"\n[rate_limit]\nper_principal_per_sec = 100000\nper_principal_burst = 100000\n\
             [aws]\nendpoint_url = {:?}\nregion = \"us-east-1\"\n[scheduler]\nworkers = 64\n",
            account.endpoint
        ),
    )?;
    let log = std::fs::File::create(dir.join("service.log"))?;
    let child = Command::new(bin)
        .args(["serve", "--config"])
        .arg(dir.join("access.toml"))
        .envs(account.env())
        .env("GRANTWATCH_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .context("starting grantwatch-access")?;
    let base = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(60);
    while reqwest::blocking::get(format!("{base}/healthz")).map(|r| r.status().as_u16()).ok() != Some(200) {
        if Instant::now() > deadline {
            bail!("grantwatch-access did not come up (see {})", dir.join("service.log").display());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(Service { child, base })
}

fn create_roles(account: &MotoAccount, roles: usize) {
    let iam = account.iam();
    block_on(async {
        let trust = json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow",
            "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}]})
        .to_string();
        for r in 0..roles {
            iam.create_role().role_name(format!("app-{r}")).assume_role_policy_document(&trust).send().await.unwrap();
        }
    });
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn now_ms() -> i64 {
    #[allow(clippy::disallowed_methods)] // a benchmark driver measures wall time
    let d = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
    d.as_millis() as i64
}

fn body(account: &MotoAccount, i: usize, roles: usize, action: &str, duration: u64) -> Value {
    json!({
        "id": format!("b{i}"),
        "identity": {"kind": "iam_role", "arn": format!("arn:aws:iam::{}:role/app-{}", account.id, i % roles)},
        "access": {"kind": "actions", "grants": [{"action": action, "resources": [format!("arn:aws:s3:::bench-{i}/*")]}]},
        "duration_secs": duration,
        "justification": "benchmark",
    })
}

struct ExpiryRun {
    grants: usize,
    roles: usize,
    spread: u64,
    setup: u64,
    concurrency: usize,
}

async fn expiry(svc: &Service, account: &MotoAccount, dir: &Path, run: ExpiryRun) -> Result<()> {
    let ExpiryRun { grants, roles, spread, setup, concurrency } = run;
    let client = reqwest::Client::new();
    let t0 = now_ms();
    let first_deadline = t0 + setup as i64 * 1000;
    let sem = Arc::new(tokio::sync::Semaphore::new(concurrency));
    let mut tasks = Vec::with_capacity(grants);
    for i in 0..grants {
        let permit = sem.clone().acquire_owned().await?;
        let target = first_deadline + (i as i64 * spread as i64 * 1000) / grants as i64;
        let duration = ((target - now_ms()) / 1000).max(1) as u64;
        let (client, url, b) =
            (client.clone(), format!("{}/v1/requests", svc.base), body(account, i, roles, "s3:GetObject", duration));
        tasks.push(tokio::spawn(async move {
            let r = client.post(url).bearer_auth(token(0)).json(&b).send().await;
            drop(permit);
            match r {
                Ok(r) if r.status().as_u16() == 201 => {
                    r.json::<Value>().await.ok().filter(|v| v["state"] == "active").is_some()
                }
                _ => false,
            }
        }));
    }
    let mut active = 0;
    for t in tasks {
        active += usize::from(t.await?);
    }
    let installed_s = (now_ms() - t0) as f64 / 1000.0;
    println!("installed {active}/{grants} grants in {installed_s:.1} s ({:.0}/s)", active as f64 / installed_s);
    if now_ms() > first_deadline {
        println!("warning: installation ran past the first deadline; raise --setup");
    }
    // Wait for every expiry in the audit log.
    let deadline = Instant::now() + Duration::from_secs(setup + spread + 300);
    let events = loop {
        let text = std::fs::read_to_string(dir.join("audit.jsonl")).unwrap_or_default();
        let expired: Vec<AccessAuditEvent> = text
            .lines()
            .filter_map(|l| serde_json::from_str::<AccessAuditEvent>(l).ok())
            .filter(|e| e.transition.command.as_str() == "expire")
            .collect();
        if expired.len() >= active || Instant::now() > deadline {
            break expired;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    let mut lags: Vec<f64> =
        events.iter().filter_map(|e| e.expires_at.map(|x| (e.transition.at.0 - x.0) as f64 / 1000.0)).collect();
    lags.sort_by(f64::total_cmp);
    let within = lags.iter().filter(|&&l| l <= 1.0).count();
    let window = events
        .iter()
        .map(|e| e.transition.at)
        .fold((EventTime(i64::MAX), EventTime(i64::MIN)), |(a, b), t| (a.min(t), b.max(t)));
    println!(
        "revoked {} of {active} grants over {:.1} s: lag after the deadline p50 {:.3} s, p99 {:.3} s, max {:.3} s; {within} ({:.2}%) within 1 s",
        events.len(),
        (window.1.0 - window.0.0) as f64 / 1000.0,
        percentile(&lags, 50.0),
        percentile(&lags, 99.0),
        lags.last().copied().unwrap_or(f64::NAN),
        100.0 * within as f64 / lags.len().max(1) as f64,
    );
    let left = {
        let iam = account.iam();
        let mut n = 0;
        for r in 0..roles {
            n += iam.list_role_policies().role_name(format!("app-{r}")).send().await?.policy_names().len();
        }
        n
    };
    println!("inline grant policies left in IAM: {left}");
    Ok(())
}

async fn timed(client: reqwest::Client, url: String, token: String, b: Option<Value>) -> (f64, u16) {
    let start = Instant::now();
    let mut req = client.post(url).bearer_auth(token);
    if let Some(b) = b {
        req = req.json(&b);
    }
    let status = match req.send().await {
        Ok(r) => {
            let s = r.status().as_u16();
            let _ = r.bytes().await;
            s
        }
        Err(_) => 0,
    };
    (start.elapsed().as_secs_f64() * 1000.0, status)
}

async fn burst(label: &str, calls: Vec<(String, String, Option<Value>)>, expect: u16) {
    let n = calls.len();
    let start = Instant::now();
    let tasks: Vec<_> = calls
        .into_iter()
        .map(|(url, token, b)| {
            // A client per call: each request is its own connection, as independent callers are.
            let client = reqwest::Client::builder().pool_max_idle_per_host(0).build().unwrap();
            tokio::spawn(timed(client, url, token, b))
        })
        .collect();
    let mut lat = Vec::with_capacity(n);
    let mut errors = 0;
    for t in tasks {
        let (ms, status) = t.await.unwrap();
        lat.push(ms);
        if status != expect {
            errors += 1;
        }
    }
    let wall = start.elapsed().as_secs_f64();
    lat.sort_by(f64::total_cmp);
    println!(
        "{label}: {n} concurrent calls in {wall:.2} s ({:.0}/s): latency p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms; errors {errors}",
        n as f64 / wall,
        percentile(&lat, 50.0),
        percentile(&lat, 99.0),
        lat.last().copied().unwrap_or(f64::NAN)
    );
}

async fn api(svc: &Service, account: &MotoAccount, requests: usize, principals: usize) {
    let url = format!("{}/v1/requests", svc.base);
    let submits = (0..requests)
        .map(|i| (url.clone(), token(i % principals), Some(body(account, i, 100, "s3:PutObject", 3600))))
        .collect();
    burst("submit (medium risk: validate, store, audit)", submits, 201).await;
    let approvals = (0..requests)
        .map(|i| (format!("{url}/b{i}/approve"), token((i + 1) % principals), Some(json!({"reason": "bench"}))))
        .collect();
    burst("approve (quorum reached: install in moto's IAM)", approvals, 200).await;
}

fn main() -> Result<()> {
    let a = Args::parse();
    let account = MotoAccount::new(&moto::endpoint());
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    match a.mode {
        Mode::Expiry { grants, roles, spread, setup, concurrency } => {
            create_roles(&account, roles);
            let svc = start(&a.bin, &a.dir, &account, 1)?;
            rt.block_on(expiry(&svc, &account, &a.dir, ExpiryRun { grants, roles, spread, setup, concurrency }))?;
        }
        Mode::Api { requests, principals } => {
            create_roles(&account, 100);
            let svc = start(&a.bin, &a.dir, &account, principals.max(2))?;
            rt.block_on(api(&svc, &account, requests, principals.max(2)));
        }
    }
    Ok(())
}
