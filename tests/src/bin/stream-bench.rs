//! Benchmarks of the streaming services on the real broker (`scripts/bench-stream` runs them with
//! release builds). Not tests: they measure and print, they assert nothing about speed.
//!
//! * `throughput`: N generated events through ingest → processor + detector; reports events/s from
//!   the start of ingest until both consumer groups have committed the last event.
//! * `latency`: CloudTrail records written to `grantwatch-ingest --stdin` at a fixed rate, with a
//!   root-account login (which raises an alert) every 50 ms; reports produce-to-alert latency.
#![allow(clippy::unwrap_used, clippy::print_stdout)] // a benchmark tool: a panic is a failed run

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use grantwatch_e2e::stack::{Stack, proc_cpu_seconds, service_bin};
use grantwatch_types::DetectionFinding;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

#[derive(Parser)]
struct Cli {
    /// Where generated data and service state go.
    #[arg(long, default_value = "/tmp/grantwatch-stream-bench")]
    work: PathBuf,
    /// Partitions of the events and entitlements topics.
    #[arg(long, default_value_t = 6)]
    partitions: i32,
    #[command(subcommand)]
    command: Bench,
}

#[derive(Subcommand)]
enum Bench {
    Throughput {
        #[arg(long, default_value_t = 1_000_000)]
        events: u64,
    },
    Latency {
        #[arg(long, default_value_t = 20_000)]
        rate: u64,
        #[arg(long, default_value_t = 30)]
        seconds: u64,
        /// Event time advances with the wall clock (a live feed: record n is stamped n / rate seconds
        /// after noon of the trail's first day) instead of replaying the trail's 30 days in `seconds`
        /// (which closes a day window every second).
        #[arg(long)]
        live_times: bool,
    },
}

/// Generates an organization's trail as one JSON Lines file (and its IAM snapshot).
fn generate(work: &Path, events: u64) -> PathBuf {
    let dir = work.join(format!("org-{events}"));
    if !dir.join("truth.json").exists() {
        let status = Command::new(service_bin("grantwatch"))
            .args(["generate", "--seed", "7", "--accounts", "3", "--identities", "100", "--days", "30"])
            .args(["--events", &events.to_string(), "--layout", "jsonl", "--out"])
            .arg(&dir)
            .status()
            .unwrap();
        assert!(status.success());
    }
    dir
}

fn jsonl_file(dir: &Path) -> PathBuf {
    let mut found = None;
    for e in walk(&dir.join("cloudtrail")) {
        if e.extension().is_some_and(|x| x == "jsonl") {
            found = Some(e);
        }
    }
    found.expect("no .jsonl file generated")
}

fn walk(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(root).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// Starts a stack with the processor and detector running and the entitlements loaded.
fn stack(cli: &Cli, name: &str, org: &Path) -> Stack {
    let state = cli.work.join(format!("state-{name}"));
    let _ = std::fs::remove_dir_all(&state);
    let mut s = Stack::new(name, cli.partitions, &state);
    // The product's defaults, not the tests' short commit interval.
    s.start("processor", "grantwatch-processor", &[("GRANTWATCH_PROCESSOR__COMMIT_INTERVAL_MS", "1000".into())]);
    s.start("detector", "grantwatch-detector", &[]);
    let iam = org.join("iam");
    assert!(s.ingest(&["--iam", iam.to_str().unwrap(), "--once"], None, &[]).success());
    let ent = s.cfg.topics.entitlements.name.clone();
    let group = s.cfg.processor.group_id.clone();
    s.wait_consumed(&group, &[&ent], Duration::from_secs(300));
    s
}

/// Whether `group` has consumed `topic` to its end. Every record of the topic was written by a
/// transactional producer, so the last offset of each partition is a transaction marker.
fn caught_up(s: &Stack, group: &str, topic: &str) -> bool {
    let c: BaseConsumer =
        ClientConfig::new().set("bootstrap.servers", &s.cfg.kafka.bootstrap_servers).create().unwrap();
    let committed = s.committed(group, topic, s.cfg.topics.events.partitions);
    (0..s.cfg.topics.events.partitions).all(|p| {
        let (_, high) = c.fetch_watermarks(topic, p, Duration::from_secs(10)).unwrap();
        high == 0 || committed.get(&p).is_some_and(|&o| o >= high - 1)
    })
}

/// CPU seconds of this process's waited-for children (`cutime + cstime` of `/proc/self/stat`).
fn children_cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let rest = stat.rsplit_once(')').map_or("", |r| r.1);
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After the command name: state, then ...; cutime and cstime are the 16th and 17th fields overall.
    let field = |i: usize| f.get(i).and_then(|x| x.parse::<i64>().ok()).unwrap_or(0);
    (field(13) + field(14)) as f64 / 100.0
}

fn throughput(cli: &Cli, events: u64) {
    let org = generate(&cli.work, events);
    let mut s = stack(cli, "throughput", &org);
    let events_topic = s.cfg.topics.events.name.clone();
    let (pg, dg) = (s.cfg.processor.group_id.clone(), s.cfg.detector.group_id.clone());
    let file = jsonl_file(&org);
    let broker_pid: Option<u32> =
        std::fs::read_to_string("/tmp/grantwatch-kafka/broker.pid").ok().and_then(|p| p.trim().parse().ok());
    let cpu =
        |s: &Stack| (s.cpu_seconds("processor"), s.cpu_seconds("detector"), broker_pid.and_then(proc_cpu_seconds));
    let cpu_before = cpu(&s);
    let children_before = children_cpu_seconds();
    let t0 = Instant::now();
    assert!(s.ingest(&["--watch", file.to_str().unwrap(), "--once"], None, &[]).success());
    let ingest_secs = t0.elapsed().as_secs_f64();
    let ingest_cpu = children_cpu_seconds() - children_before;
    let (mut processor_secs, mut detector_secs) = (None, None);
    while processor_secs.is_none() || detector_secs.is_none() {
        std::thread::sleep(Duration::from_millis(200));
        if processor_secs.is_none() && caught_up(&s, &pg, &events_topic) {
            processor_secs = Some(t0.elapsed().as_secs_f64());
        }
        if detector_secs.is_none() && caught_up(&s, &dg, &events_topic) {
            detector_secs = Some(t0.elapsed().as_secs_f64());
        }
        assert!(t0.elapsed() < Duration::from_secs(1800), "not caught up after 30 minutes");
    }
    let (p, d) = (processor_secs.unwrap(), detector_secs.unwrap());
    let cpu_after = cpu(&s);
    let used = |a: Option<f64>, b: Option<f64>| a.zip(b).map_or(f64::NAN, |(a, b)| b - a);
    let end_to_end = p.max(d);
    println!("throughput: {events} events, {} partitions", cli.partitions);
    println!(
        "  ingest (read, normalize, produce; transactions of 50,000): {ingest_secs:.1} s = {:.0} events/s",
        events as f64 / ingest_secs
    );
    println!("  processor caught up after {p:.1} s, detector after {d:.1} s");
    println!("  end to end (ingest start -> last event committed by both): {:.0} events/s", events as f64 / end_to_end);
    println!(
        "  CPU seconds during the run: ingest {ingest_cpu:.1}, processor {:.1}, detector {:.1}, broker {:.1}",
        used(cpu_before.0, cpu_after.0),
        used(cpu_before.1, cpu_after.1),
        used(cpu_before.2, cpu_after.2)
    );
    s.stop("processor");
    s.stop("detector");
    keep_logs(&s, &cli.work.join("logs-throughput"));
}

/// Copies the services' logs out of the stack's temporary directory.
fn keep_logs(s: &Stack, to: &Path) {
    let _ = std::fs::remove_dir_all(to);
    let _ = std::fs::create_dir_all(to);
    for f in walk(s.dir.path()) {
        if f.extension().is_some_and(|x| x == "log") {
            let _ = std::fs::copy(&f, to.join(f.file_name().unwrap_or_default()));
        }
    }
}

/// Record n stamped n / rate seconds after noon of the first record's day (far from a window boundary).
fn restamp_live(lines: Vec<String>, rate: u64) -> Vec<String> {
    let time = |l: &str| {
        let v: serde_json::Value = serde_json::from_str(l).unwrap();
        grantwatch_types::EventTime::parse_rfc3339(v["eventTime"].as_str().unwrap()).unwrap().millis()
    };
    let Some(first) = lines.first().map(|l| time(l)) else { return lines };
    let noon = first - first.rem_euclid(86_400_000) + 43_200_000;
    lines
        .into_iter()
        .enumerate()
        .map(|(n, l)| {
            let mut v: serde_json::Value = serde_json::from_str(&l).unwrap();
            v["eventTime"] = grantwatch_types::EventTime(noon + n as i64 * 1000 / rate as i64).to_rfc3339().into();
            v.to_string()
        })
        .collect()
}

fn latency(cli: &Cli, rate: u64, seconds: u64, live_times: bool) {
    let total = rate * seconds;
    let org = generate(&cli.work, total.max(100_000));
    let lines: Vec<String> =
        std::fs::read_to_string(jsonl_file(&org)).unwrap().lines().take(total as usize).map(str::to_string).collect();
    let mut s = stack(cli, "latency", &org);
    let alerts_topic = s.cfg.topics.alerts.name.clone();

    // Alerts are read as subscribers read them: read_committed.
    let arrivals: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &s.cfg.kafka.bootstrap_servers)
        .set("group.id", "stream-bench")
        .set("isolation.level", "read_committed")
        .set("fetch.wait.max.ms", "10")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..s.cfg.topics.alerts.partitions {
        tpl.add_partition_offset(&alerts_topic, p, Offset::Beginning).unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let (arrivals, done) = (arrivals.clone(), done.clone());
        std::thread::spawn(move || {
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                if let Some(Ok(m)) = consumer.poll(Duration::from_millis(20)) {
                    let now = Instant::now();
                    if let Ok(f) = serde_json::from_slice::<DetectionFinding>(m.payload().unwrap_or_default())
                        && let Some(e) = f.finding_info.related_events.first()
                    {
                        arrivals.lock().unwrap().insert(e.uid.clone(), now);
                    }
                }
            }
        })
    };

    let mut ingest = s.command("grantwatch-ingest", &["run", "--stdin"]);
    let mut child = ingest.stdin(Stdio::piped()).spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let marker_every = (rate / 20).max(1) as usize; // 20 alerts per second
    let mut sent: HashMap<String, Instant> = HashMap::new();
    let tick = Duration::from_millis(5);
    let per_tick = ((rate as f64) * tick.as_secs_f64()).round().max(1.0) as usize;
    let start = Instant::now();
    let mut next = start;
    let mut buf = Vec::with_capacity(per_tick * 1200);
    // Restamped before the clock starts: the sender must not compete with the services for the CPU.
    let lines = if live_times { restamp_live(lines, rate) } else { lines };
    for (i, chunk) in lines.chunks(per_tick).enumerate() {
        buf.clear();
        let mut markers = Vec::new();
        for (j, line) in chunk.iter().enumerate() {
            let n = i * per_tick + j;
            if n.is_multiple_of(marker_every) {
                let mut v: serde_json::Value = serde_json::from_str(line).unwrap();
                // A root of an account of its own: the detector folds repeats of one identity into one
                // incident, and every marker must raise an alert of its own to be timed.
                let account = format!("{:012}", 900_000_000_000u64 + n as u64);
                v["recipientAccountId"] = account.clone().into();
                let id = format!("bench-marker-{n}");
                v["eventID"] = id.clone().into();
                v["eventSource"] = "signin.amazonaws.com".into();
                v["eventName"] = "ConsoleLogin".into();
                v["userIdentity"] = serde_json::json!({"type": "Root", "principalId": account, "arn": format!("arn:aws:iam::{account}:root"), "accountId": account});
                buf.extend_from_slice(v.to_string().as_bytes());
                markers.push(id);
            } else {
                buf.extend_from_slice(line.as_bytes());
            }
            buf.push(b'\n');
        }
        next += tick;
        if let Some(wait) = next.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        stdin.write_all(&buf).unwrap();
        let now = Instant::now();
        for id in markers {
            sent.insert(id, now);
        }
    }
    let send_secs = start.elapsed().as_secs_f64();
    drop(stdin);
    let deadline = Instant::now() + Duration::from_secs(30);
    let all_arrived = || {
        let a = arrivals.lock().unwrap();
        sent.keys().all(|id| a.contains_key(id))
    };
    while Instant::now() < deadline && !all_arrived() {
        std::thread::sleep(Duration::from_millis(100));
    }
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    reader.join().unwrap();
    assert!(child.wait().unwrap().success());
    let arrivals = arrivals.lock().unwrap();
    let mut lat: Vec<f64> = sent
        .iter()
        .filter_map(|(id, t)| arrivals.get(id).map(|a| a.duration_since(*t).as_secs_f64() * 1000.0))
        .collect();
    lat.sort_by(f64::total_cmp);
    let q = |p: f64| lat.get(((lat.len() as f64 - 1.0) * p).round() as usize).copied().unwrap_or(f64::NAN);
    println!(
        "latency: {} records at a target of {rate}/s: sent in {send_secs:.1} s ({:.0}/s)",
        lines.len(),
        lines.len() as f64 / send_secs
    );
    println!(
        "  produce (write to ingest stdin) -> alert committed on {alerts_topic}: {} of {} alerts seen; p50 {:.0} ms, p90 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
        lat.len(),
        sent.len(),
        q(0.5),
        q(0.9),
        q(0.99),
        lat.last().copied().unwrap_or(f64::NAN)
    );
    s.stop("processor");
    s.stop("detector");
    keep_logs(&s, &cli.work.join("logs-latency"));
}

fn main() {
    let cli = Cli::parse();
    std::fs::create_dir_all(&cli.work).unwrap();
    match cli.command {
        Bench::Throughput { events } => throughput(&cli, events),
        Bench::Latency { rate, seconds, live_times } => latency(&cli, rate, seconds, live_times),
    }
}
