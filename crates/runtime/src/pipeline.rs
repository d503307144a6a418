//! The event-time pipeline: usage, PCI and detection on each event, in event-time order, on every core.
//!
//! Events enter in arrival order and leave one [`ReorderBuffer`] in event-time order. Each released
//! event goes to the *shard* of its identity (a hash of the actor's ARN); a shard holds the
//! [`ProcessorStage`] (usage accounting, entitlements, PCI windows) and, when detection is on, the
//! [`DetectStage`] (rules, anomalies, models) of its identities, and runs on its own thread.
//!
//! Shards stay equivalent to one pipeline over all identities because every shard sees the same
//! sequence of watermark ticks: released events are gathered into a batch (their times, in release
//! order) and every shard walks the whole batch, processing its own events and ticking its stages at
//! every later time, as a single pipeline would. A shard's state is its identities' keys only.
//! What crosses identities is explicit:
//! - a grant (`AttachUserPolicy` to another identity, ...) is a [`GrantNotice`] routed to the
//!   grantee's shard at the granting event's position;
//! - the window clock (`LAST_CLOSE`) and the run-wide event span are the same in every shard
//!   (same ticks; a merge), so each shard writing them is harmless;
//! - models and peer-group statistics are read-only reference data;
//! - on-demand grants ([`Pipeline::supply_on_demand`]) are given to every shard, which all fold and
//!   forget them alike (same input, same ticks), so each writing them is harmless too.
//!
//! Output does not depend on the number of shards or on thread timing: alerts of a batch are ordered
//! by (position in the batch, phase: the event, then PCI updates, then the watermark's closings,
//! finding id). The pipeline does no IO: the runner gives it a store to read, takes its writes with
//! [`Pipeline::snapshot`] (all shards, one batch) and takes the alerts from [`Pipeline::take_alerts`].
//!
//! Every event carries a tag (the runner's file index). [`Pipeline::take_released`] lists the tags of
//! the events released since the last call; a snapshot includes every released event, so the runner
//! may mark a file done in the batch of the first snapshot after its last event is released.

use std::sync::Arc;

use grantwatch_core::catalog::Catalog;
use grantwatch_core::policy::IdentityGrants;
use grantwatch_core::processor::{ProcessorConfig, ProcessorOutput, ProcessorStage};
use grantwatch_core::stage::{Cx, Stage, StageError};
use grantwatch_core::usage::Observed;
use grantwatch_detect::ml::TrainingWindow;
use grantwatch_detect::ondemand::OnDemandGrants;
use grantwatch_detect::stage::{DetectCounts, DetectInput, DetectStage, Detection, GrantNotice};
use grantwatch_state::{StateRead, WriteBatch};
use grantwatch_types::{ActionMapping, DetectionFinding, Event, EventTime};
use rustc_hash::FxHashMap;

use crate::reorder::{Released, ReorderBuffer};

/// Settings of a pipeline.
#[derive(Debug, Clone)]
pub struct PipelineConfig {
    pub processor: ProcessorConfig,
    /// The out-of-orderness bound of the watermark ([`crate::DEFAULT_MAX_OUT_OF_ORDERNESS_MS`]).
    pub max_out_of_orderness_ms: i64,
    /// Events held for reordering at most; beyond, the oldest is processed early (late), never kept.
    pub reorder_capacity: usize,
    /// Keep every closed identity-hour window (for `grantwatch train`).
    pub collect_windows: bool,
    /// Shards (threads) the identities are spread over; 0: one per core.
    pub shards: usize,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        PipelineConfig {
            processor: ProcessorConfig::default(),
            max_out_of_orderness_ms: crate::DEFAULT_MAX_OUT_OF_ORDERNESS_MS,
            reorder_capacity: crate::DEFAULT_REORDER_CAPACITY,
            collect_windows: false,
            shards: 0,
        }
    }
}

/// What the pipeline counted.
#[derive(Debug, Clone, Default)]
pub struct PipelineCounts {
    /// Distinct events accounted.
    pub counted: u64,
    /// Copies of events already accounted (this run or an earlier one).
    pub duplicates: u64,
    /// Events that need no IAM permission.
    pub no_permission: u64,
    /// Events whose call maps to no IAM action, by (service, operation).
    pub unmapped: FxHashMap<(String, String), u64>,
    /// Events processed after a later one (behind the watermark, or pushed out by a full buffer).
    pub late: u64,
    pub pci_updates: u64,
    pub first_event: Option<EventTime>,
    pub last_event: Option<EventTime>,
}

/// Released events gathered before the shards process them together (one thread hand-off per batch).
const BATCH: usize = 4096;

/// What a shard is given at a position of a batch.
enum ShardItem {
    /// A grant to one of the shard's identities (before the granting event, when both are here).
    Grant(GrantNotice),
    Event(Box<Event>),
}

/// The phases of one position, in the order a single pipeline runs them.
const PHASE_EVENT: u8 = 0;
const PHASE_PCI: u8 = 1;
const PHASE_TICK: u8 = 2;
const PHASE_END: u8 = 3;

/// The stages of one shard of identities.
struct Shard {
    processor: ProcessorStage,
    detect: Option<DetectStage>,
    watermark: i64,
    /// This batch's items, by position.
    items: Vec<(u32, ShardItem)>,
    proc_out: Vec<ProcessorOutput>,
    scratch: Vec<DetectionFinding>,
    /// Alerts of this batch: (position, phase, alert).
    out: Vec<(u32, u8, DetectionFinding)>,
    counts: PipelineCounts,
}

impl Shard {
    /// Walks one batch: the shard's own items at their positions, and every later time as a tick.
    fn run(&mut self, times: &[i64], state: &dyn StateRead) -> Result<(), StageError> {
        let mut items = std::mem::take(&mut self.items).into_iter().peekable();
        for (pos, &t) in times.iter().enumerate() {
            let pos = pos as u32;
            while let Some((_, item)) = items.next_if(|(p, _)| *p == pos) {
                match item {
                    ShardItem::Grant(notice) => {
                        if let Some(detect) = &mut self.detect {
                            detect.apply_grant(notice, state)?;
                        }
                    }
                    ShardItem::Event(ev) => self.event(ev, pos, state)?,
                }
            }
            if t > self.watermark {
                self.tick(t, pos, state)?;
            }
        }
        Ok(())
    }

    fn event(&mut self, ev: Box<Event>, pos: u32, state: &dyn StateRead) -> Result<(), StageError> {
        let c = &mut self.counts;
        // Usage first: it decides whether the event is a re-delivery, and detection (which trusts that
        // decision, see `DetectStage::trust_upstream_dedup`) sees each event once.
        match self.processor.offer_event(&ev, state)? {
            Observed::Duplicate => c.duplicates += 1,
            Observed::Counted => {
                c.counted += 1;
                match ev.mapping {
                    ActionMapping::NoPermission => c.no_permission += 1,
                    ActionMapping::Unmapped => {
                        let k = (ev.api.service.clone(), ev.api.operation.clone());
                        *c.unmapped.entry(k).or_insert(0) += 1;
                    }
                    ActionMapping::Direct | ActionMapping::Exception => {}
                }
                if let Some(detect) = &mut self.detect {
                    detect.process(&DetectInput::Event(ev), &mut Cx { state, out: &mut self.scratch })?;
                    self.out.extend(self.scratch.drain(..).map(|a| (pos, PHASE_EVENT, a)));
                }
            }
        }
        Ok(())
    }

    fn tick(&mut self, t: i64, pos: u32, state: &dyn StateRead) -> Result<(), StageError> {
        self.watermark = t;
        self.processor.on_watermark(EventTime(t), &mut Cx { state, out: &mut self.proc_out })?;
        for o in self.proc_out.drain(..) {
            if let ProcessorOutput::Pci(u) = o {
                self.counts.pci_updates += 1;
                if let Some(detect) = &mut self.detect {
                    detect.process(&DetectInput::Pci(u), &mut Cx { state, out: &mut self.scratch })?;
                }
            }
        }
        self.out.extend(self.scratch.drain(..).map(|a| (pos, PHASE_PCI, a)));
        if let Some(detect) = &mut self.detect {
            detect.on_watermark(EventTime(t), &mut Cx { state, out: &mut self.scratch })?;
            self.out.extend(self.scratch.drain(..).map(|a| (pos, PHASE_TICK, a)));
        }
        Ok(())
    }

    fn pending(&self) -> usize {
        self.processor.pending() + self.detect.as_ref().map_or(0, Stage::pending)
    }
}

/// The shard of an identity: a stable hash of its ARN (XXH3: fixed across runs, platforms and
/// versions, and well mixed in its low bits, which a modulo by a small count keeps).
fn shard_of(uid: &str, shards: usize) -> usize {
    if shards <= 1 {
        return 0;
    }
    (xxhash_rust::xxh3::xxh3_64(uid.as_bytes()) % shards as u64) as usize
}

/// The reorder buffer and the shards.
pub struct Pipeline {
    shards: Vec<Shard>,
    /// Threads running the shards of a batch (none with one shard: it runs on the caller's thread).
    pool: Option<rayon::ThreadPool>,
    reorder: ReorderBuffer<(Box<Event>, u32)>,
    /// Times of the released events of the current batch, in release order.
    times: Vec<i64>,
    alerts: Vec<DetectionFinding>,
    released: Vec<u32>,
    /// Counted at release: late, first and last event. The shards count the rest.
    counts: PipelineCounts,
}

impl Pipeline {
    /// Opens the stages over `state` (restoring what an earlier run or a crash left there).
    pub fn open(
        catalog: Arc<Catalog>,
        detection: Option<Arc<Detection>>,
        cfg: &PipelineConfig,
        state: &dyn StateRead,
    ) -> Result<Self, StageError> {
        let n = if cfg.shards == 0 {
            std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get)
        } else {
            cfg.shards
        };
        let mut shards = Vec::with_capacity(n);
        for i in 0..n {
            let owns = |uid: &str| shard_of(uid, n) == i;
            let mut processor = ProcessorStage::open_shard(catalog.clone(), cfg.processor.clone(), state, &owns)?;
            if n > 1 {
                processor.restrict_to(Arc::new(move |uid: &str| shard_of(uid, n) == i));
            }
            let detect = match &detection {
                Some(d) => {
                    let mut stage = DetectStage::open_shard(d.clone(), state, &owns)?;
                    stage.trust_upstream_dedup();
                    stage.route_grants();
                    if cfg.collect_windows {
                        stage.collect_windows();
                    }
                    Some(stage)
                }
                None => None,
            };
            shards.push(Shard {
                processor,
                detect,
                watermark: i64::MIN,
                items: Vec::new(),
                proc_out: Vec::new(),
                scratch: Vec::new(),
                out: Vec::new(),
                counts: PipelineCounts::default(),
            });
        }
        // Without threads (one shard, or none could be started) the shards run on the caller's thread:
        // slower, same answer.
        let pool = (n > 1)
            .then(|| {
                rayon::ThreadPoolBuilder::new()
                    .num_threads(n)
                    .thread_name(|i| format!("gw-shard-{i}"))
                    .build()
                    .inspect_err(
                        |e| tracing::warn!(error = %e, "Could not start shard threads; running shards on one thread."),
                    )
                    .ok()
            })
            .flatten();
        Ok(Pipeline {
            shards,
            pool,
            reorder: ReorderBuffer::new(cfg.max_out_of_orderness_ms, cfg.reorder_capacity),
            times: Vec::new(),
            alerts: Vec::new(),
            released: Vec::new(),
            counts: PipelineCounts::default(),
        })
    }

    /// Entitlements evaluated by the runner, supplied on every start.
    pub fn supply_grants(&mut self, grants: Arc<IdentityGrants>) {
        for s in &mut self.shards {
            s.processor.supply_grants(grants.clone());
        }
    }

    /// On-demand grants read by the runner (the access service's audit log), supplied on every start:
    /// every shard holds all of them (a grant names an identity, or a permission set whose role's
    /// sessions any shard may own).
    pub fn supply_on_demand(&mut self, grants: &OnDemandGrants) {
        for s in &mut self.shards {
            if let Some(d) = &mut s.detect {
                d.supply_on_demand(grants);
            }
        }
    }

    /// Offers one event; processes whatever the reorder buffer releases.
    pub fn push(&mut self, ev: Box<Event>, tag: u32, state: &(dyn StateRead + Sync)) -> Result<(), StageError> {
        let t = ev.time.millis();
        let mut due = Vec::new();
        self.reorder.push(t, (ev, tag), &mut |r| due.push(r));
        self.route(due, state)
    }

    /// Caps the reorder buffer's watermark (see [`ReorderBuffer::set_limit`]) and processes what is due.
    pub fn set_limit(&mut self, limit: Option<i64>, state: &(dyn StateRead + Sync)) -> Result<(), StageError> {
        let mut due = Vec::new();
        self.reorder.set_limit(limit, &mut |r| due.push(r));
        self.route(due, state)
    }

    /// End of input: processes everything held, then closes every open hour window and incident.
    pub fn finish(&mut self, state: &(dyn StateRead + Sync)) -> Result<(), StageError> {
        let mut due = Vec::new();
        self.reorder.drain(&mut |r| due.push(r));
        self.route(due, state)?;
        self.flush(state)?;
        let mut out = Vec::new();
        for s in &mut self.shards {
            if let Some(detect) = &mut s.detect {
                detect.on_watermark(EventTime(i64::MAX / 4), &mut Cx { state, out: &mut s.scratch })?;
                out.extend(s.scratch.drain(..).map(|a| (0, PHASE_END, a)));
            }
        }
        self.merge_alerts(out);
        Ok(())
    }

    /// Puts released events into the batch, at their identity's shard (and a grant at its grantee's).
    fn route(
        &mut self,
        due: Vec<Released<(Box<Event>, u32)>>,
        state: &(dyn StateRead + Sync),
    ) -> Result<(), StageError> {
        let n = self.shards.len();
        for r in due {
            let (ev, tag) = r.item;
            self.released.push(tag);
            let c = &mut self.counts;
            if r.late {
                c.late += 1;
            }
            c.first_event = Some(c.first_event.map_or(ev.time, |f| f.min(ev.time)));
            c.last_event = Some(c.last_event.map_or(ev.time, |l| l.max(ev.time)));
            let pos = self.times.len() as u32;
            self.times.push(r.time_ms);
            if let Some(notice) = GrantNotice::of(&ev)
                && let Some(s) = self.shards.get_mut(shard_of(notice.grantee(), n))
            {
                s.items.push((pos, ShardItem::Grant(notice)));
            }
            if let Some(s) = self.shards.get_mut(shard_of(&ev.actor.uid, n)) {
                s.items.push((pos, ShardItem::Event(ev)));
            }
            if self.times.len() >= BATCH {
                self.flush(state)?;
            }
        }
        Ok(())
    }

    /// Runs the batch on every shard (in parallel when there are several) and collects its alerts.
    fn flush(&mut self, state: &(dyn StateRead + Sync)) -> Result<(), StageError> {
        if self.times.is_empty() {
            return Ok(());
        }
        let times = std::mem::take(&mut self.times);
        let results: Vec<Result<(), StageError>> = match &self.pool {
            None => self.shards.iter_mut().map(|s| s.run(&times, state)).collect(),
            Some(pool) => {
                let mut results: Vec<Result<(), StageError>> = Vec::new();
                results.resize_with(self.shards.len(), || Ok(()));
                let times = &times;
                pool.scope(|scope| {
                    for (s, r) in self.shards.iter_mut().zip(results.iter_mut()) {
                        scope.spawn(move |_| *r = s.run(times, state));
                    }
                });
                results
            }
        };
        results.into_iter().collect::<Result<(), StageError>>()?;
        let mut out = Vec::new();
        for s in &mut self.shards {
            out.append(&mut s.out);
        }
        self.merge_alerts(out);
        self.times = times;
        self.times.clear();
        Ok(())
    }

    /// Appends a batch's alerts in an order independent of shards and threads.
    fn merge_alerts(&mut self, mut out: Vec<(u32, u8, DetectionFinding)>) {
        out.sort_by(|a, b| {
            (a.0, a.1, &a.2.finding_info.uid, a.2.activity_id).cmp(&(b.0, b.1, &b.2.finding_info.uid, b.2.activity_id))
        });
        self.alerts.extend(out.into_iter().map(|(_, _, a)| a));
    }

    /// Pending state writes of every shard.
    pub fn pending(&self) -> usize {
        self.shards.iter().map(Shard::pending).sum()
    }

    /// Processes the batch, then takes every shard's writes: the state after every released event.
    pub fn snapshot(&mut self, batch: &mut WriteBatch, state: &(dyn StateRead + Sync)) -> Result<(), StageError> {
        self.flush(state)?;
        for s in &mut self.shards {
            s.processor.snapshot(batch)?;
            if let Some(d) = &mut s.detect {
                d.snapshot(batch)?;
            }
        }
        Ok(())
    }

    pub fn committed(&mut self) {
        for s in &mut self.shards {
            s.processor.committed();
            if let Some(d) = &mut s.detect {
                d.committed();
            }
        }
    }

    /// Alerts produced since the last call (those of processed batches).
    pub fn take_alerts(&mut self) -> Vec<DetectionFinding> {
        std::mem::take(&mut self.alerts)
    }

    /// Tags of the events released since the last call.
    pub fn take_released(&mut self) -> Vec<u32> {
        std::mem::take(&mut self.released)
    }

    /// What the pipeline counted, over every shard.
    pub fn counts(&self) -> PipelineCounts {
        let mut c = self.counts.clone();
        for s in &self.shards {
            let k = &s.counts;
            c.counted += k.counted;
            c.duplicates += k.duplicates;
            c.no_permission += k.no_permission;
            c.pci_updates += k.pci_updates;
            for (key, n) in &k.unmapped {
                *c.unmapped.entry(key.clone()).or_insert(0) += n;
            }
        }
        c
    }

    /// Detection's counts over every shard (`None` without detection).
    pub fn detect_counts(&self) -> Option<DetectCounts> {
        let mut total: Option<DetectCounts> = None;
        for d in self.shards.iter().filter_map(|s| s.detect.as_ref()) {
            let t = total.get_or_insert_with(DetectCounts::default);
            let k = &d.counts;
            t.events += k.events;
            t.duplicates += k.duplicates;
            t.alerts += k.alerts;
            t.repeats += k.repeats;
            t.established += k.established;
            t.windows_scored += k.windows_scored;
            t.on_demand_uses += k.on_demand_uses;
            // Every shard folds the same access events.
            t.access_events = t.access_events.max(k.access_events);
        }
        total
    }

    /// Every closed identity-hour window (training), by identity and time.
    pub fn take_windows(&mut self) -> Vec<TrainingWindow> {
        let mut all: Vec<TrainingWindow> =
            self.shards.iter_mut().filter_map(|s| s.detect.as_mut()).flat_map(DetectStage::take_windows).collect();
        all.sort_by(|a, b| (&a.identity, a.start_ms).cmp(&(&b.identity, b.start_ms)));
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use grantwatch_core::testing::{ALICE, event};
    use grantwatch_state::{MemStore, StateStore, Table};
    use grantwatch_types::RawJson;

    const T0: i64 = 1_767_571_200_000; // 2026-01-05T00:00:00Z
    const MIN: i64 = 60_000;
    const BOB: &str = "arn:aws:iam::111122223333:user/bob";

    fn detection(catalog: &Arc<Catalog>) -> Arc<Detection> {
        let rules = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../rules");
        let (det, _) = grantwatch_detect::load::load_detection(catalog.clone(), &rules, None).unwrap();
        Arc::new(det)
    }

    fn call(id: &str, actor: &str, at: i64, service: &str, op: &str, action: &str) -> Event {
        let mut e = event(id, EventTime(at));
        e.actor.uid = actor.into();
        e.actor.name = actor.rsplit('/').next().map(str::to_string);
        e.api = grantwatch_types::Api { service: service.into(), operation: op.into() };
        e.actions = vec![action.into()];
        e.read_only = Some(false);
        e.src_ip = Some("198.51.100.7".into());
        e
    }

    /// Three days of a small organization, arriving out of order and partly twice, with a grant by one
    /// identity to another that the grantee uses minutes later.
    fn events() -> Vec<Event> {
        let mut out = Vec::new();
        let ops = [
            ("s3.amazonaws.com", "GetObject", "s3:GetObject"),
            ("ec2.amazonaws.com", "DescribeInstances", "ec2:DescribeInstances"),
            ("iam.amazonaws.com", "ListRoles", "iam:ListRoles"),
            ("kms.amazonaws.com", "Decrypt", "kms:Decrypt"),
        ];
        for i in 0..600u32 {
            let who = format!("arn:aws:iam::111122223333:user/u{}", i % 23);
            let (svc, op, action) = ops[(i % 4) as usize];
            // Jitter within a few minutes: arrival is not event-time order.
            let at = T0 + i64::from(i) * 7 * MIN + i64::from((i * 37) % 5) * MIN;
            let mut e = call(&format!("e{i}"), &who, at, svc, op, action);
            if i % 50 == 7 {
                e.region = "ap-southeast-2".into();
            }
            if i % 61 == 5 {
                e.actor.kind = grantwatch_types::IdentityKind::Root;
                e.actor.uid = "arn:aws:iam::111122223333:root".into();
            }
            if i % 97 == 11 {
                e.api = grantwatch_types::Api {
                    service: "cloudtrail.amazonaws.com".into(),
                    operation: "StopLogging".into(),
                };
                e.actions = vec!["cloudtrail:StopLogging".into()];
            }
            out.push(e);
        }
        let grant_at = T0 + 30 * 60 * MIN;
        let mut grant = call("grant", ALICE, grant_at, "iam.amazonaws.com", "AttachUserPolicy", "iam:AttachUserPolicy");
        grant.request =
            RawJson::from_text(r#"{"userName":"bob","policyArn":"arn:aws:iam::aws:policy/AdministratorAccess"}"#);
        out.push(grant);
        out.push(call("use", BOB, grant_at + 4 * MIN, "iam.amazonaws.com", "CreateUser", "iam:CreateUser"));
        // Re-deliveries of a slice of events.
        let again: Vec<Event> = out.iter().step_by(9).cloned().collect();
        out.extend(again);
        out
    }

    /// Every key and value of a store.
    type Dump = Vec<(Table, Vec<u8>, Vec<u8>)>;

    /// Runs the pipeline over `events` with `shards` shards, committing now and then; returns the
    /// alerts (as JSON) and every key of the store.
    fn run(shards: usize, events: &[Event]) -> (Vec<String>, Dump) {
        let catalog = Arc::new(Catalog::aws().unwrap());
        let store = MemStore::new();
        let cfg = PipelineConfig { shards, max_out_of_orderness_ms: 10 * MIN, ..PipelineConfig::default() };
        let mut alerts = Vec::new();
        let mut p = Pipeline::open(catalog.clone(), Some(detection(&catalog)), &cfg, &store).unwrap();
        let commit = |p: &mut Pipeline, alerts: &mut Vec<String>| {
            let mut batch = WriteBatch::new();
            p.snapshot(&mut batch, &store).unwrap();
            store.write(batch).unwrap();
            p.committed();
            alerts.extend(p.take_alerts().iter().map(|a| serde_json::to_string(a).unwrap()));
        };
        for (i, e) in events.iter().enumerate() {
            p.push(Box::new(e.clone()), 0, &store).unwrap();
            if i % 97 == 0 {
                commit(&mut p, &mut alerts);
            }
        }
        p.finish(&store).unwrap();
        commit(&mut p, &mut alerts);
        let mut keys = Vec::new();
        for t in Table::ALL {
            store
                .scan_prefix(t, b"", &mut |k, v| {
                    keys.push((t, k.to_vec(), v.to_vec()));
                    true
                })
                .unwrap();
        }
        (alerts, keys)
    }

    #[test]
    fn the_answer_does_not_depend_on_the_number_of_shards() {
        // The grantor and the grantee live in different shards for some of the counts tried.
        assert!((2..=4).any(|n| shard_of(ALICE, n) != shard_of(BOB, n)));
        let events = events();
        let (alerts, state) = run(1, &events);
        assert!(
            alerts.iter().any(|a| a.contains("grantwatch/granted-and-used") && a.contains("user/bob")),
            "the grant to bob and his use of it are one alert"
        );
        for analytic in ["grantwatch/root-account-used", "grantwatch/logging-disabled"] {
            assert!(alerts.iter().any(|a| a.contains(analytic)), "no {analytic} alert");
        }
        for n in 2..=4 {
            let (a, s) = run(n, &events);
            assert_eq!(a, alerts, "alerts with {n} shards");
            assert!(s == state, "state with {n} shards differs");
        }
    }
}
