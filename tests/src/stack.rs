//! A real Kafka broker (started by `scripts/kafka`, the project's own script) and the three services
//! as real processes, on topics of their own: each test gets a fresh topic prefix.
#![allow(clippy::unwrap_used)] // test support: a panic is a failed test

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Once;
use std::time::{Duration, Instant};

use grantwatch_core::usage::{IdentityUsage, identities_in_logs};
use grantwatch_runtime::kafka::client::read_to_end;
use grantwatch_runtime::kafka::config::Config;
use grantwatch_state::{StateRead, Table};
use grantwatch_state_rocks::RocksStore;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

static BROKER: Once = Once::new();
static BUILD: Once = Once::new();

/// Starts the single-node KRaft broker if it is not running (idempotent; fetches Kafka from Maven
/// Central on first use) and returns its bootstrap address.
pub fn broker() -> String {
    BROKER.call_once(|| {
        let status = Command::new(repo().join("scripts/kafka")).arg("start").status().unwrap();
        assert!(status.success(), "scripts/kafka start failed");
    });
    let out = Command::new(repo().join("scripts/kafka")).arg("bootstrap").output().unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// Records of a topic partition as (key, payload), in order.
pub type Records = Vec<(Option<String>, String)>;

/// The service binaries (and the `grantwatch` CLI): from `GRANTWATCH_BIN_DIR` if set (benchmarks point it at release builds),
/// else built (or found up to date) with the cargo running these tests.
pub fn service_bin(name: &str) -> PathBuf {
    if let Some(dir) = std::env::var_os("GRANTWATCH_BIN_DIR") {
        return PathBuf::from(dir).join(name);
    }
    BUILD.call_once(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .current_dir(repo())
            .args(["build", "-q", "-p", "grantwatch", "-p", "grantwatch-ingest", "-p", "grantwatch-processor"])
            .args(["-p", "grantwatch-detector", "-p", "grantwatch-access-service"])
            .status()
            .unwrap();
        assert!(status.success(), "building the services failed");
    });
    // target/<profile>/deps/<test binary> → target/<profile>/<service>
    let exe = std::env::current_exe().unwrap();
    exe.parent().unwrap().parent().unwrap().join(name)
}

/// A Kafka broker of one test's own (`scripts/kafka` with its own data directory and ports), for tests
/// that stop and start it; stopped when dropped.
pub struct PrivateBroker {
    data: tempfile::TempDir,
    port: u16,
    controller_port: u16,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

impl PrivateBroker {
    pub fn start() -> PrivateBroker {
        broker(); // the shared one fetched the jars
        let b = PrivateBroker { data: tempfile::tempdir().unwrap(), port: free_port(), controller_port: free_port() };
        b.run("start");
        b
    }

    /// `scripts/kafka WHAT` for this broker (its data directory and ports).
    fn script(&self, what: &str) -> Command {
        let mut c = Command::new(repo().join("scripts/kafka"));
        c.arg(what)
            .env("GRANTWATCH_KAFKA_DATA", self.data.path())
            .env("KAFKA_PORT", self.port.to_string())
            .env("KAFKA_CONTROLLER_PORT", self.controller_port.to_string());
        c
    }

    fn run(&self, what: &str) {
        assert!(self.script(what).status().unwrap().success(), "scripts/kafka {what} failed");
    }

    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Stops the broker (its data stays); `start_again` brings it back on the same ports.
    pub fn stop(&self) {
        self.run("stop");
    }

    pub fn start_again(&self) {
        self.run("start");
    }
}

impl Drop for PrivateBroker {
    fn drop(&mut self) {
        let _ = self.script("stop").status();
    }
}

pub struct Stack {
    pub dir: tempfile::TempDir,
    pub config_path: PathBuf,
    pub cfg: Config,
    children: Vec<(String, Child)>,
    spawned: usize,
}

impl Stack {
    /// A fresh set of topics (`partitions` for events and entitlements), consumer groups of its own,
    /// services keeping their state under `state_root`, and a config naming them all.
    pub fn new(name: &str, partitions: i32, state_root: &Path) -> Stack {
        Self::on_broker(&broker(), name, partitions, state_root)
    }

    /// [`Stack::new`] on the broker at `bootstrap` (a [`PrivateBroker`]).
    pub fn on_broker(bootstrap: &str, name: &str, partitions: i32, state_root: &Path) -> Stack {
        service_bin("grantwatch-ingest");
        let dir = tempfile::Builder::new().prefix(&format!("gw-{name}-")).tempdir().unwrap();
        let prefix = format!("t{}-{}-{}.", std::process::id(), name, rand::random::<u32>());
        let mut toml = format!("[kafka]\nbootstrap_servers = \"{bootstrap}\"\n");
        for (key, parts, compacted) in [
            ("events", partitions, false),
            ("entitlements", partitions, true),
            ("pci", partitions, true),
            ("findings", 2, false),
            ("remediation", 2, false),
            ("alerts", 2, false),
            ("late", 1, false),
            ("dlq", 1, false),
            ("ingest_checkpoints", 1, true),
            ("processor_changelog", partitions, true),
            ("detector_changelog", partitions, true),
            ("access", 1, false),
        ] {
            toml.push_str(&format!("[topics.{key}]\nname = \"{prefix}{key}\"\npartitions = {parts}\n"));
            if compacted {
                toml.push_str("compacted = true\nretention_ms = -1\n");
            }
        }
        // Groups (and so transactional ids) of their own: a static member id reused by another test's
        // group with other topics would be handed that group's old assignment.
        toml.push_str(&format!(
            "[ingest]\nhttp_listen = \"\"\ninstance_id = \"{prefix}ingest\"\n\
             [processor]\ngroup_id = \"{prefix}processor\"\nstate_dir = \"{}\"\nhttp_listen = \"\"\ncommit_interval_ms = 300\n\
             [detector]\ngroup_id = \"{prefix}detector\"\nstate_dir = \"{}\"\nhttp_listen = \"\"\nrules_dir = \"{}\"\n",
            state_root.join("processor").display(),
            state_root.join("detector").display(),
            repo().join("rules").display()
        ));
        let config_path = dir.path().join("grantwatch.toml");
        std::fs::write(&config_path, toml).unwrap();
        let cfg = Config::load(Some(&config_path)).unwrap();
        let mut stack = Stack { dir, config_path, cfg, children: Vec::new(), spawned: 0 };
        let status = stack.command("grantwatch-ingest", &["create-topics"]).status().unwrap();
        assert!(status.success());
        stack.spawned = 0;
        stack
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// A command for a service with this stack's config, logging to a file of its own.
    pub fn command(&mut self, bin: &str, args: &[&str]) -> Command {
        self.spawned += 1;
        let log = std::fs::File::create(self.path(&format!("{bin}-{}.log", self.spawned))).unwrap();
        let mut c = Command::new(service_bin(bin));
        c.arg("--config").arg(&self.config_path).args(args).stdout(Stdio::null()).stderr(log);
        c.env("RUST_LOG", "info,librdkafka=warn");
        c
    }

    /// Starts a long-running service; `env` overrides its configuration.
    pub fn start(&mut self, label: &str, bin: &str, env: &[(&str, String)]) {
        let mut c = self.command(bin, &[]);
        for (k, v) in env {
            c.env(k, v);
        }
        let child = c.spawn().unwrap();
        self.children.push((label.to_string(), child));
    }

    pub fn kill(&mut self, label: &str) {
        if let Some(i) = self.children.iter().position(|(l, _)| l == label) {
            let (_, mut child) = self.children.remove(i);
            let _ = child.kill(); // SIGKILL
            let _ = child.wait();
        }
    }

    /// CPU seconds (user + system) a running child has used so far, from `/proc` (Linux).
    pub fn cpu_seconds(&self, label: &str) -> Option<f64> {
        let (_, child) = self.children.iter().find(|(l, _)| l == label)?;
        proc_cpu_seconds(child.id())
    }

    /// SIGTERM, then waits for a clean exit.
    pub fn stop(&mut self, label: &str) {
        if let Some(i) = self.children.iter().position(|(l, _)| l == label) {
            let (_, mut child) = self.children.remove(i);
            let status = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status().unwrap();
            assert!(status.success());
            let status = child.wait().unwrap();
            assert!(status.success(), "{label} exited with {status} after SIGTERM");
        }
    }

    /// Runs `grantwatch-ingest run ARGS` to completion, feeding `stdin` if given.
    pub fn ingest(&mut self, args: &[&str], stdin: Option<&[u8]>, env: &[(&str, String)]) -> std::process::ExitStatus {
        let mut full = vec!["run"];
        full.extend_from_slice(args);
        let mut c = self.command("grantwatch-ingest", &full);
        for (k, v) in env {
            c.env(k, v);
        }
        c.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() });
        let mut child = c.spawn().unwrap();
        if let Some(bytes) = stdin {
            child.stdin.take().unwrap().write_all(bytes).unwrap();
        }
        child.wait().unwrap()
    }

    pub fn spawn_ingest(&mut self, label: &str, args: &[&str], env: &[(&str, String)]) {
        let mut full = vec!["run"];
        full.extend_from_slice(args);
        let mut c = self.command("grantwatch-ingest", &full);
        for (k, v) in env {
            c.env(k, v);
        }
        let child = c.spawn().unwrap();
        self.children.push((label.to_string(), child));
    }

    /// Waits for a spawned child to exit on its own; `None` if it is still running after `timeout`.
    pub fn wait_exit(&mut self, label: &str, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        let i = self.children.iter().position(|(l, _)| l == label)?;
        loop {
            if let Some(status) = self.children[i].1.try_wait().unwrap() {
                self.children.remove(i);
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Every committed record of `topic`: `(partition, offset, key, payload)`.
    pub fn read(&self, topic: &str) -> Vec<(i32, i64, Option<String>, Vec<u8>)> {
        let spec = self.cfg.topics.all().into_iter().find(|t| t.name == topic).unwrap().clone();
        let parts: Vec<i32> = (0..spec.partitions).collect();
        let mut out = Vec::new();
        read_to_end(&self.cfg.kafka, topic, &parts, Offset::Beginning, None, &mut |p, o, k, v| {
            out.push((p, o, k.map(|k| String::from_utf8_lossy(k).into_owned()), v.unwrap_or_default().to_vec()));
            Ok(())
        })
        .unwrap();
        out
    }

    /// The records of `topic` as `T`, watermark marks left out.
    pub fn read_json<T: serde::de::DeserializeOwned>(&self, topic: &str) -> Vec<T> {
        self.read(topic)
            .into_iter()
            .filter(|(_, _, k, _)| k.as_deref() != Some(grantwatch_types::WATERMARK_KEY))
            .map(|(_, _, _, v)| serde_json::from_slice(&v).unwrap())
            .collect()
    }

    /// Every record of `topic`, marks included, as (key, payload) in order, by partition.
    pub fn records_by_partition(&self, topic: &str) -> BTreeMap<i32, Records> {
        let mut out: BTreeMap<i32, Vec<_>> = BTreeMap::new();
        for (p, _, k, v) in self.read(topic) {
            out.entry(p).or_default().push((k, String::from_utf8_lossy(&v).into_owned()));
        }
        out
    }

    /// Produces raw records outside any transaction (to inject bad input).
    pub fn produce_raw(&self, topic: &str, key: &str, payload: &[u8]) {
        let p: BaseProducer =
            ClientConfig::new().set("bootstrap.servers", &self.cfg.kafka.bootstrap_servers).create().unwrap();
        p.send(BaseRecord::to(topic).key(key).payload(payload)).unwrap();
        p.flush(Duration::from_secs(30)).unwrap();
    }

    /// The offsets after the last data record of every partition of `topic`.
    fn data_ends(&self, topic: &str) -> BTreeMap<i32, i64> {
        let mut ends = BTreeMap::new();
        for (p, o, _, _) in self.read(topic) {
            ends.insert(p, o + 1);
        }
        ends
    }

    /// Offsets the group `group` committed on `topic`.
    pub fn committed(&self, group: &str, topic: &str, partitions: i32) -> BTreeMap<i32, i64> {
        let c: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &self.cfg.kafka.bootstrap_servers)
            .set("group.id", group)
            .create()
            .unwrap();
        let mut tpl = TopicPartitionList::new();
        for p in 0..partitions {
            tpl.add_partition(topic, p);
        }
        // A loaded machine (tests in parallel, a second broker starting) can time a query out: retry.
        let mut attempts = 0;
        let got = loop {
            match c.committed_offsets(tpl.clone(), Duration::from_secs(10)) {
                Ok(got) => break got,
                Err(e) if attempts < 5 => {
                    attempts += 1;
                    eprintln!("committed offsets of {group}: {e}; retrying");
                }
                Err(e) => panic!("committed offsets of {group}: {e}"),
            }
        };
        got.elements()
            .iter()
            .filter_map(|e| match e.offset() {
                Offset::Offset(o) => Some((e.partition(), o)),
                _ => None,
            })
            .collect()
    }

    /// Waits until `group` has committed past every data record of `topics`.
    pub fn wait_consumed(&self, group: &str, topics: &[&str], timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let parts = self.cfg.topics.events.partitions;
        let want: Vec<(String, BTreeMap<i32, i64>)> =
            topics.iter().map(|t| (t.to_string(), self.data_ends(t))).collect();
        loop {
            let done = want.iter().all(|(t, ends)| {
                let got = self.committed(group, t, parts);
                ends.iter().all(|(p, end)| got.get(p).is_some_and(|o| o >= end))
            });
            if done {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "group {group} did not consume {topics:?} in {timeout:?}; logs in {}",
                self.dir.path().display()
            );
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    /// The processor's usage state, per identity, read from the partition directories of `state_dirs`
    /// (several instances: for each partition, the copy whose offset equals the group's commit).
    pub fn processor_usage(&self, state_dirs: &[PathBuf]) -> BTreeMap<String, IdentityUsage> {
        let events = &self.cfg.topics.events;
        let committed = self.committed(&self.cfg.processor.group_id, &events.name, events.partitions);
        let key = grantwatch_state::keys::RUNNER_OFFSET.key_str(&events.name);
        let mut out = BTreeMap::new();
        for p in 0..events.partitions {
            let Some(&want) = committed.get(&p) else { continue };
            let mut found = false;
            for dir in state_dirs {
                let path = dir.join(format!("p{p}"));
                if !path.exists() {
                    continue;
                }
                let store = RocksStore::open(&path).unwrap();
                let local = store.get(Table::Meta, &key).unwrap().map(|v| i64::from_be_bytes(v.try_into().unwrap()));
                if local != Some(want) {
                    continue;
                }
                found = true;
                for (arn, _) in identities_in_logs(&store).unwrap() {
                    out.insert(arn.clone(), IdentityUsage::load(&store, &arn, true).unwrap());
                }
                break;
            }
            assert!(found, "no state of partition {p} at the committed offset {want}");
        }
        out
    }
}

/// CPU seconds (user + system) of process `pid` so far, from `/proc/<pid>/stat` (Linux, 100 ticks/s).
pub fn proc_cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name; utime and stime are the 14th and 15th overall.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / 100.0)
}

/// Usage per identity in an embedded (`grantwatch analyze`) state directory.
pub fn embedded_usage(state: &Path) -> BTreeMap<String, IdentityUsage> {
    let store = RocksStore::open(state).unwrap();
    identities_in_logs(&store)
        .unwrap()
        .into_iter()
        .map(|(arn, _)| {
            let u = IdentityUsage::load(&store, &arn, true).unwrap();
            (arn, u)
        })
        .collect()
}

/// Asserts two usage maps are equal, naming the first identity that differs.
pub fn assert_same_usage(a: &BTreeMap<String, IdentityUsage>, b: &BTreeMap<String, IdentityUsage>, what: &str) {
    let ka: Vec<&String> = a.keys().collect();
    let kb: Vec<&String> = b.keys().collect();
    assert_eq!(ka, kb, "{what}: different identities");
    for (arn, ua) in a {
        assert_eq!(ua, &b[arn], "{what}: usage of {arn} differs");
    }
}

impl Stack {
    /// Deletes this stack's topics (they would otherwise fill the test broker's disk run after run).
    pub fn delete_topics(&self) {
        use rdkafka::admin::{AdminClient, AdminOptions};
        use rdkafka::client::DefaultClientContext;
        let Ok(admin) = ClientConfig::new()
            .set("bootstrap.servers", &self.cfg.kafka.bootstrap_servers)
            .create::<AdminClient<DefaultClientContext>>()
        else {
            return;
        };
        let names: Vec<&str> = self.cfg.topics.all().iter().map(|t| t.name.as_str()).collect();
        if let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() {
            let _ = rt.block_on(admin.delete_topics(&names, &AdminOptions::new()));
        }
    }
}

impl Stack {
    /// Deletes every record of `topic` (as retention would): consumers keep their offsets, and a
    /// task can no longer rebuild its state from it.
    pub fn delete_all_records(&self, topic: &str) {
        use rdkafka::admin::{AdminClient, AdminOptions};
        use rdkafka::client::DefaultClientContext;
        let admin: AdminClient<DefaultClientContext> =
            ClientConfig::new().set("bootstrap.servers", &self.cfg.kafka.bootstrap_servers).create().unwrap();
        let spec = self.cfg.topics.all().into_iter().find(|t| t.name == topic).unwrap().clone();
        let mut tpl = rdkafka::TopicPartitionList::new();
        for p in 0..spec.partitions {
            tpl.add_partition_offset(topic, p, rdkafka::Offset::End).unwrap();
        }
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let result = rt.block_on(admin.delete_records(&tpl, &AdminOptions::new())).unwrap();
        for e in result.elements() {
            assert!(e.error().is_ok(), "deleting the records of {topic} partition {}: {:?}", e.partition(), e.error());
        }
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        for (_, c) in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        if !std::thread::panicking() {
            self.delete_topics();
        }
        if std::thread::panicking() {
            // Keep the logs of a failed test.
            let kept = self.dir.path().to_path_buf();
            let _ = std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap()).keep();
            eprintln!("service logs kept in {}", kept.display());
        }
    }
}
