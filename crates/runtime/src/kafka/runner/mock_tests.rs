//! The runner against librdkafka's mock cluster, over in-memory task stores: consume, process,
//! produce and commit in transactions; a restart resumes from the committed state; an interrupted
//! commit's outbox is sent exactly once, or dropped when the group already has it.
//!
//! The mock cluster speaks the real protocol (consumer groups, transactions, read_committed) inside the
//! test process, with one gap: it acknowledges the offsets a transaction commits for the group
//! (`TxnOffsetCommit`) without storing them (librdkafka 2.12). Where a case turns on the group's
//! offsets, the test sets them with a plain commit first. The end-to-end tests in `tests/` run the
//! services, transactional offsets included, against a real broker.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use grantwatch_core::stage::{Cx, Stage, StageError};
use grantwatch_state::{MemStore, StateRead, StateStore, Table, WriteBatch};
use grantwatch_types::EventTime;
use rdkafka::ClientConfig;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer, ProducerContext};

use super::*;

const IN: &str = "in";
const OUT: &str = "out";
const PARTITIONS: i32 = 2;

/// Counts records per key, in state: output `key=n` for the n-th record of `key`. A record applied
/// twice, or a count lost across a restart, shows in the outputs.
struct Counting;

struct CountingStage {
    counts: BTreeMap<Vec<u8>, u64>,
    dirty: BTreeMap<Vec<u8>, u64>,
}

fn count_key(key: &[u8]) -> Vec<u8> {
    [b"test:count:".as_slice(), key].concat()
}

impl Stage for CountingStage {
    type In = (Vec<u8>, i64);
    type Out = String;

    fn process(&mut self, (key, _): &(Vec<u8>, i64), cx: &mut Cx<'_, String>) -> Result<(), StageError> {
        let n = match self.counts.get(key) {
            Some(n) => *n,
            None => cx
                .state
                .get(Table::Meta, &count_key(key))?
                .map(|v| u64::from_be_bytes(v.try_into().unwrap_or_default()))
                .unwrap_or(0),
        } + 1;
        self.counts.insert(key.clone(), n);
        self.dirty.insert(key.clone(), n);
        cx.out.push(format!("{}={n}", String::from_utf8_lossy(key)));
        Ok(())
    }

    fn snapshot(&mut self, batch: &mut WriteBatch) -> Result<(), StageError> {
        for (k, n) in std::mem::take(&mut self.dirty) {
            batch.put(Table::Meta, count_key(&k), n.to_be_bytes().to_vec());
        }
        Ok(())
    }

    fn pending(&self) -> usize {
        self.dirty.len()
    }
}

impl App for Counting {
    type Stage = CountingStage;
    fn name(&self) -> &'static str {
        "counting"
    }
    fn inputs(&self) -> Vec<String> {
        vec![IN.into()]
    }
    fn open_stage(&self, _: &dyn StateRead) -> Result<CountingStage, StageError> {
        Ok(CountingStage { counts: BTreeMap::new(), dirty: BTreeMap::new() })
    }
    fn decode(&self, _: usize, key: Option<&[u8]>, payload: &[u8]) -> Result<(Vec<u8>, i64), String> {
        let time = std::str::from_utf8(payload).ok().and_then(|p| p.parse().ok()).ok_or("not a time")?;
        Ok((key.unwrap_or_default().to_vec(), time))
    }
    fn event_time(&self, (_, t): &(Vec<u8>, i64)) -> Option<EventTime> {
        Some(EventTime(*t))
    }
    fn encode(&self, out: String, emits: &mut Vec<Emit>) {
        emits.push(Emit { partition: None, topic: OUT.into(), key: None, payload: out.into_bytes(), kind: "alert" });
    }
}

fn cluster() -> MockCluster<'static, rdkafka::producer::DefaultProducerContext> {
    let mock = MockCluster::new(1).expect("mock cluster");
    for (topic, partitions) in [(IN, PARTITIONS), (OUT, 1), ("late", 1), ("dlq", 1)] {
        mock.create_topic(topic, partitions, 1).expect("mock topic");
    }
    mock
}

fn config(mock: &MockCluster<'static, impl ProducerContext>, group: &str) -> RunnerConfig {
    RunnerConfig {
        kafka: KafkaConfig { bootstrap_servers: mock.bootstrap_servers(), properties: Default::default() },
        group_id: group.into(),
        instance_id: "0".into(),
        state_dir: std::env::temp_dir(), // unused: the stores are in memory
        max_out_of_orderness_ms: 1_000,
        commit_interval: Duration::from_millis(50),
        late_topic: "late".into(),
        dlq_topic: "dlq".into(),
        max_pending: 1_000,
        max_record_bytes: 1 << 20,
        changelog_topic: None,
    }
}

/// Produces `(key, payload)` records to partition `p` of the input.
fn produce(mock: &MockCluster<'static, impl ProducerContext>, p: i32, records: &[(&str, String)]) {
    let producer: BaseProducer =
        ClientConfig::new().set("bootstrap.servers", mock.bootstrap_servers()).create().expect("producer");
    for (key, payload) in records {
        producer.send(BaseRecord::to(IN).partition(p).key(*key).payload(payload)).expect("enqueue");
    }
    producer.flush(Duration::from_secs(10)).expect("flush");
}

/// Sets the group's committed offset of input partition `p`, as a transaction that went through would.
fn commit_group(mock: &MockCluster<'static, impl ProducerContext>, group: &str, p: i32, next: i64) {
    use rdkafka::consumer::{CommitMode, Consumer};
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", mock.bootstrap_servers())
        .set("group.id", group)
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(IN, p, Offset::Offset(next)).expect("offset");
    consumer.commit(&tpl, CommitMode::Sync).expect("commit the group's offset");
}

/// Every committed record of `topic`, as text.
fn committed(mock: &MockCluster<'static, impl ProducerContext>, topic: &str) -> Vec<String> {
    let kafka = KafkaConfig { bootstrap_servers: mock.bootstrap_servers(), properties: Default::default() };
    let mut out = Vec::new();
    read_to_end(&kafka, topic, &[0], Offset::Beginning, None, &mut |_, _, _, payload| {
        out.push(String::from_utf8_lossy(payload.unwrap_or_default()).into_owned());
        Ok(())
    })
    .expect("read output");
    out
}

/// Runs a runner over `stores` until `done` holds for the committed outputs (or 60 s pass), then
/// stops it the way SIGTERM does.
fn run_until(
    mock: &MockCluster<'static, impl ProducerContext>,
    group: &str,
    stores: &MemStores,
    done: impl Fn(&[String]) -> bool,
) -> Vec<String> {
    run_until_with(mock, config(mock, group), stores, done)
}

fn run_until_with(
    mock: &MockCluster<'static, impl ProducerContext>,
    cfg: RunnerConfig,
    stores: &MemStores,
    done: impl Fn(&[String]) -> bool,
) -> Vec<String> {
    let stop = Arc::new(AtomicBool::new(false));
    let runner = {
        let (stores, stop) = (stores.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut runner = Runner::new(Counting, cfg, stores, Metrics::new(), Health::new())?;
            runner.run(&stop)
        })
    };
    let started = Instant::now();
    let mut out = committed(mock, OUT);
    while !done(&out) && started.elapsed() < Duration::from_secs(60) && !runner.is_finished() {
        std::thread::sleep(Duration::from_millis(100));
        out = committed(mock, OUT);
    }
    stop.store(true, Ordering::Relaxed);
    runner.join().expect("runner thread").expect("runner");
    committed(mock, OUT)
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

fn expected(counts: &[(&str, u64)]) -> Vec<String> {
    sorted(counts.iter().flat_map(|(k, n)| (1..=*n).map(move |i| format!("{k}={i}"))).collect())
}

#[test]
fn outputs_are_exactly_once_across_a_restart_and_bad_records_are_dead_letters() {
    let mock = cluster();
    let stores = MemStores::default();
    let batch = |key: &'static str, from: i64, n: i64| -> Vec<(&'static str, String)> {
        (from..from + n).map(|t| (key, (t * 1000).to_string())).collect()
    };
    produce(&mock, 0, &batch("a", 0, 30));
    produce(&mock, 1, &[batch("b", 0, 20), vec![("b", "not a number".to_string())]].concat());

    let first = run_until(&mock, "g", &stores, |out| out.len() >= 50);
    assert_eq!(sorted(first), expected(&[("a", 30), ("b", 20)]));
    let dead = committed(&mock, "dlq");
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert!(dead[0].contains("not a time") && dead[0].contains("\"partition\":1"), "{}", dead[0]);
    // The offsets and counts are in the task's state, committed with the outputs.
    let p0 = stores.get(0);
    assert_eq!(read_i64(&p0, OFFSET, &offset_key(OFFSET, IN)).unwrap(), Some(30));
    assert!(p0.get(Table::Meta, OUTBOX).unwrap().is_none(), "outbox cleared after the commit");

    // Restarted on the same state: counting goes on where it stopped, nothing is produced twice.
    produce(&mock, 0, &batch("a", 30, 5));
    produce(&mock, 1, &batch("c", 20, 3));
    let second = run_until(&mock, "g", &stores, |out| out.len() >= 58);
    assert_eq!(sorted(second), expected(&[("a", 35), ("b", 20), ("c", 3)]));
    assert_eq!(committed(&mock, "dlq").len(), 1);
}

/// A commit interrupted after step 1 (state and outbox written) and before step 2 (the transaction):
/// the restarted task sends the outbox with the offsets it goes with. If the group already has those
/// offsets (the crash came after step 2), the outbox is dropped instead.
#[test]
fn an_interrupted_commit_is_completed_once_on_restart() {
    let mock = cluster();
    let stores = MemStores::default();
    produce(&mock, 0, &(0..5).map(|t| ("a", t.to_string())).collect::<Vec<_>>());
    // State as a crash between steps 1 and 2 leaves it: records 0..3 applied (counted 3), their
    // outputs in the outbox, which starts from the group's offsets (none committed yet).
    let p0: Arc<MemStore> = stores.get(0);
    let mut batch = WriteBatch::new();
    batch.put(Table::Meta, count_key(b"a"), 3u64.to_be_bytes().to_vec());
    batch.put(Table::Meta, offset_key(OFFSET, IN), 3i64.to_be_bytes().to_vec());
    // Marked, so that outputs sent from the outbox differ from outputs computed again.
    let outbox: Vec<Emit> = (1..=3)
        .map(|n| Emit {
            partition: None,
            topic: OUT.into(),
            key: None,
            payload: format!("a={n} outbox").into_bytes(),
            kind: "alert",
        })
        .collect();
    batch.put(Table::Meta, OUTBOX.to_vec(), encode_outbox(&outbox));
    p0.write(batch).unwrap();

    let out = run_until(&mock, "g", &stores, |out| out.len() >= 5);
    assert_eq!(out, ["a=1 outbox", "a=2 outbox", "a=3 outbox", "a=4", "a=5"], "outbox sent once, then records 3 and 4");

    // Crash after step 2: an outbox left behind whose offsets the group has. It must not be sent,
    // and the state is kept (a count no recomputation gives shows it was not rebuilt).
    let stale =
        vec![Emit { partition: None, topic: OUT.into(), key: None, payload: b"a=stale".to_vec(), kind: "alert" }];
    let mut batch = WriteBatch::new();
    batch.put(Table::Meta, count_key(b"a"), 50u64.to_be_bytes().to_vec());
    batch.put(Table::Meta, OUTBOX.to_vec(), encode_outbox(&stale));
    batch.put(Table::Meta, offset_key(OUTBOX_FROM, IN), 3i64.to_be_bytes().to_vec());
    p0.write(batch).unwrap();
    // A fresh group name: the mock refuses a plain commit to a group that had members.
    commit_group(&mock, "g2", 0, 5);
    produce(&mock, 0, &[("a", "9".to_string())]);
    let out = run_until(&mock, "g2", &stores, |out| out.len() >= 6);
    assert_eq!(out[5..], ["a=51"]);
    assert!(stores.get(0).get(Table::Meta, OUTBOX).unwrap().is_none());
}

/// Every key of a store but the outbox, sorted.
fn state_of(store: &dyn StateRead) -> Vec<(Table, Vec<u8>, Vec<u8>)> {
    let mut out = Vec::new();
    for t in Table::ALL {
        store
            .scan_prefix(t, b"", &mut |k, v| {
                if !(t == Table::Meta && (k == OUTBOX || k.starts_with(keys::RUNNER_OUTBOX_FROM.prefix))) {
                    out.push((t, k.to_vec(), v.to_vec()));
                }
                true
            })
            .unwrap();
    }
    out
}

/// The changelog, crash mid-commit included: replaying the topic gives the task's state. The crash
/// loses the interrupted commit's changelog records, so the reopened task logs its whole state with
/// the outbox it sends.
#[test]
fn replaying_the_changelog_gives_the_state_even_after_a_crash_mid_commit() {
    let mock = cluster();
    mock.create_topic("changelog", PARTITIONS, 1).expect("mock topic");
    let stores = MemStores::default();
    let cfg = || RunnerConfig { changelog_topic: Some("changelog".into()), ..config(&mock, "g") };
    produce(&mock, 0, &(0..3).map(|t| ("a", t.to_string())).collect::<Vec<_>>());
    produce(&mock, 1, &[("b", "0".to_string())]);
    let out = run_until_with(&mock, cfg(), &stores, |out| out.len() >= 4);
    assert_eq!(sorted(out), expected(&[("a", 3), ("b", 1)]));

    // A crash between steps 1 and 2 of a later commit: state and outbox written, nothing produced.
    let p0 = stores.get(0);
    let next = read_i64(&*p0, OFFSET, &offset_key(OFFSET, IN)).unwrap().unwrap();
    let mut batch = WriteBatch::new();
    batch.put(Table::Meta, count_key(b"a"), 40u64.to_be_bytes().to_vec());
    batch.put(Table::Meta, b"crashed-commit".to_vec(), b"x".to_vec());
    batch.put(Table::Meta, offset_key(OFFSET, IN), (next + 1).to_be_bytes().to_vec());
    let outbox =
        vec![Emit { partition: None, topic: OUT.into(), key: None, payload: b"a=40 outbox".to_vec(), kind: "alert" }];
    batch.put(Table::Meta, OUTBOX.to_vec(), encode_outbox(&outbox));
    p0.write(batch).unwrap();
    produce(&mock, 0, &[("a", "3".to_string()), ("a", "4".to_string())]);
    let out = run_until_with(&mock, cfg(), &stores, |out| out.len() >= 6);
    assert_eq!(out[4..], ["a=40 outbox", "a=41"], "outbox resent, then the record after it");

    for p in 0..PARTITIONS {
        let replayed = MemStore::new();
        let kafka = config(&mock, "reader").kafka;
        read_to_end(&kafka, "changelog", &[p], Offset::Beginning, None, &mut |_, _, key, value| {
            let mut b = WriteBatch::new();
            match changelog::decode(key.unwrap_or_default(), value) {
                Some(changelog::Change::Reset) => {
                    let mut clear = WriteBatch::new();
                    for (t, k, _) in state_of(&replayed) {
                        clear.delete(t, k);
                    }
                    replayed.write(clear)?;
                }
                Some(change) => change.apply_to(&mut b),
                None => panic!("a changelog record that does not decode"),
            }
            Ok(replayed.write(b)?)
        })
        .unwrap();
        let state = state_of(&*stores.get(p));
        assert!(state.iter().any(|(_, k, _)| k == changelog::LOGGED));
        assert_eq!(state_of(&replayed), state, "partition {p}");
    }
}

/// Local state behind the group's offsets by more than an outbox explains (another instance went on
/// from here): the task rebuilds from the start of the input, and outputs are not produced again.
#[test]
fn state_that_diverged_from_the_group_is_rebuilt_without_producing_again() {
    let mock = cluster();
    let stores = MemStores::default();
    produce(&mock, 0, &(0..4).map(|t| ("a", t.to_string())).collect::<Vec<_>>());
    let out = run_until(&mock, "g", &stores, |out| out.len() >= 4);
    assert_eq!(sorted(out), expected(&[("a", 4)]));
    // Replace the local state by an older one with an outbox the group never saw at these offsets.
    let p0 = stores.reset(0, stores.get(0)).unwrap();
    let mut batch = WriteBatch::new();
    batch.put(Table::Meta, count_key(b"a"), 1u64.to_be_bytes().to_vec());
    batch.put(Table::Meta, offset_key(OFFSET, IN), 2i64.to_be_bytes().to_vec());
    batch.put(Table::Meta, offset_key(OUTBOX_FROM, IN), 1i64.to_be_bytes().to_vec());
    let lost = vec![Emit { partition: None, topic: OUT.into(), key: None, payload: b"a=lost".to_vec(), kind: "alert" }];
    batch.put(Table::Meta, OUTBOX.to_vec(), encode_outbox(&lost));
    p0.write(batch).unwrap();
    commit_group(&mock, "g2", 0, 4);

    produce(&mock, 0, &[("a", "9".to_string())]);
    let out = run_until(&mock, "g2", &stores, |out| out.len() >= 5);
    assert_eq!(sorted(out), expected(&[("a", 5)]), "rebuilt from offset 0: the fifth record counts 5");
}

const SIDE: &str = "side";

/// Events (`in`, payload: time) meet the side value (`side`, payload `time=value`, taking effect at
/// its time) current when the watermark reached them: output `t:value`.
struct Joining;

struct JoiningStage {
    current: String,
}

/// An event or a side value.
enum Joined {
    Event(i64),
    Side(i64, String),
}

impl Stage for JoiningStage {
    type In = Joined;
    type Out = String;

    fn process(&mut self, input: &Joined, cx: &mut Cx<'_, String>) -> Result<(), StageError> {
        match input {
            Joined::Event(t) => cx.out.push(format!("{t}:{}", self.current)),
            Joined::Side(_, v) => self.current = v.clone(),
        }
        Ok(())
    }

    fn snapshot(&mut self, _: &mut WriteBatch) -> Result<(), StageError> {
        Ok(())
    }

    fn pending(&self) -> usize {
        0
    }
}

impl App for Joining {
    type Stage = JoiningStage;
    fn name(&self) -> &'static str {
        "joining"
    }
    fn inputs(&self) -> Vec<String> {
        vec![IN.into(), SIDE.into()]
    }
    fn open_stage(&self, _: &dyn StateRead) -> Result<JoiningStage, StageError> {
        Ok(JoiningStage { current: "none".into() })
    }
    fn decode(&self, input: usize, _: Option<&[u8]>, payload: &[u8]) -> Result<Joined, String> {
        let text = std::str::from_utf8(payload).map_err(|e| e.to_string())?;
        let time = |t: &str| t.parse::<i64>().map_err(|e| e.to_string());
        match (input, text.split_once('=')) {
            (0, None) => Ok(Joined::Event(time(text)?)),
            (1, Some((t, v))) => Ok(Joined::Side(time(t)?, v.to_string())),
            _ => Err(format!("not a record of input {input}")),
        }
    }
    fn event_time(&self, input: &Joined) -> Option<EventTime> {
        match input {
            Joined::Event(t) => Some(EventTime(*t)),
            Joined::Side(..) => None,
        }
    }
    fn side_input(&self) -> Option<usize> {
        Some(1)
    }
    fn side_time(&self, input: &Joined) -> Option<EventTime> {
        match input {
            Joined::Side(t, _) => Some(EventTime(*t)),
            Joined::Event(_) => None,
        }
    }
    fn encode(&self, out: String, emits: &mut Vec<Emit>) {
        emits.push(Emit { partition: None, topic: OUT.into(), key: None, payload: out.into_bytes(), kind: "alert" });
    }
}

/// Produces side records (`(time, value)`, or a mark when the value is `None`) to partition 0.
fn produce_side(mock: &MockCluster<'static, impl ProducerContext>, records: &[(i64, Option<&str>)]) {
    let producer: BaseProducer =
        ClientConfig::new().set("bootstrap.servers", mock.bootstrap_servers()).create().expect("producer");
    for (t, v) in records {
        let (key, payload) = match v {
            Some(v) => (b"v".to_vec(), format!("{t}={v}").into_bytes()),
            None => {
                let mark = Emit::watermark_mark(SIDE, 0, *t);
                (mark.key.unwrap_or_default(), mark.payload)
            }
        };
        producer.send(BaseRecord::to(SIDE).partition(0).key(&key).payload(&payload)).expect("enqueue");
    }
    producer.flush(Duration::from_secs(10)).expect("flush");
}

/// Runs the joining app over the inputs, fed in `steps` (each a batch of events or side records, with
/// the runner consuming between them), and returns its outputs in order.
type Mock = MockCluster<'static, rdkafka::producer::DefaultProducerContext>;

fn join_run(steps: &[&dyn Fn(&Mock)]) -> Vec<String> {
    let mock = MockCluster::new(1).expect("mock cluster");
    for (topic, partitions) in [(IN, 1), (SIDE, 1), (OUT, 1), ("late", 1), ("dlq", 1)] {
        mock.create_topic(topic, partitions, 1).expect("mock topic");
    }
    let stop = Arc::new(AtomicBool::new(false));
    let runner = {
        let (cfg, stop) = (config(&mock, "join"), stop.clone());
        std::thread::spawn(move || {
            let mut runner = Runner::new(Joining, cfg, MemStores::default(), Metrics::new(), Health::new())?;
            runner.run(&stop)
        })
    };
    for step in steps {
        step(&mock);
        std::thread::sleep(Duration::from_millis(1500));
    }
    let started = Instant::now();
    while committed(&mock, OUT).len() < 12 && started.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(100));
    }
    stop.store(true, Ordering::Relaxed);
    runner.join().expect("runner thread").expect("runner");
    committed(&mock, OUT)
}

/// The side input is joined as of each event's time, whatever the order in which the consumer meets
/// the two topics: side records first (a backlog), events first (the side source late), or mixed.
#[test]
fn a_side_input_is_joined_as_of_event_time_whatever_the_arrival_order() {
    let events = |from: i64, to: i64| {
        move |mock: &Mock| {
            produce(mock, 0, &(from..to).map(|s| ("e", (s * 1000).to_string())).collect::<Vec<_>>());
        }
    };
    // A first snapshot (before the first mark: it holds from the start), a change at 5 s, marks.
    let side_all = |mock: &Mock| {
        produce_side(mock, &[(0, Some("v1")), (3_000, None), (5_000, Some("v2")), (60_000, None)]);
    };
    let side_first = |mock: &Mock| {
        produce_side(mock, &[(0, Some("v1")), (3_000, None)]);
    };
    let side_rest = |mock: &Mock| {
        produce_side(mock, &[(5_000, Some("v2")), (60_000, None)]);
    };
    let (all_events, early, late) = (events(0, 12), events(0, 6), events(6, 12));

    let backlog = join_run(&[&side_all, &all_events]);
    // Each event sees what took effect by the watermark before it (bound 1 s): v2 from 7 s on.
    let want: Vec<String> =
        (0..12).map(|s| format!("{}:{}", s * 1000, if s * 1000 - 1000 > 5_000 { "v2" } else { "v1" })).collect();
    assert_eq!(backlog, want, "side input first");
    assert_eq!(join_run(&[&all_events, &side_all]), want, "events first: they wait for the side input");
    assert_eq!(join_run(&[&side_first, &early, &side_rest, &late]), want, "interleaved");
    assert_eq!(join_run(&[&early, &side_first, &late, &side_rest]), want, "events ahead of a mark");
}
