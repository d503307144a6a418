//! The event-time pipeline of one shard: usage, PCI and detection on each event, in event-time order.
//!
//! Events enter in arrival order and leave a [`ReorderBuffer`] in event-time order into the
//! [`ProcessorStage`] (usage accounting, entitlements, PCI windows) and, when detection is on, the
//! [`DetectStage`] (rules, anomalies, models). PCI updates of a window the processor closes go to
//! detection before the next event, as in the services. The pipeline does no IO: the runner gives it
//! a store to read, takes its writes with [`Pipeline::snapshot`] and writes them in one batch with its
//! own progress, and takes the alerts from [`Pipeline::take_alerts`].
//!
//! Every event carries a tag (the runner's file index). [`Pipeline::take_released`] lists the tags of
//! the events processed since the last call, so the runner knows when all of a file's events are in
//! the stages' state and the file may be marked done in the same batch.

use std::sync::Arc;

use grantwatch_core::catalog::Catalog;
use grantwatch_core::policy::IdentityGrants;
use grantwatch_core::processor::{ProcessorConfig, ProcessorOutput, ProcessorStage};
use grantwatch_core::stage::{Cx, Stage, StageError};
use grantwatch_core::usage::Observed;
use grantwatch_detect::ml::TrainingWindow;
use grantwatch_detect::stage::{DetectCounts, DetectInput, DetectStage, Detection};
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
}

impl Default for PipelineConfig {
    fn default() -> Self {
        PipelineConfig {
            processor: ProcessorConfig::default(),
            max_out_of_orderness_ms: crate::DEFAULT_MAX_OUT_OF_ORDERNESS_MS,
            reorder_capacity: crate::DEFAULT_REORDER_CAPACITY,
            collect_windows: false,
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

/// One shard's stages and its reorder buffer.
pub struct Pipeline {
    processor: ProcessorStage,
    detect: Option<DetectStage>,
    reorder: ReorderBuffer<(Box<Event>, u32)>,
    watermark: i64,
    proc_out: Vec<ProcessorOutput>,
    alerts: Vec<DetectionFinding>,
    released: Vec<u32>,
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
        let processor = ProcessorStage::open(catalog, cfg.processor.clone(), state)?;
        let detect = match detection {
            Some(d) => {
                let mut stage = DetectStage::open(d, state)?;
                if cfg.collect_windows {
                    stage.collect_windows();
                }
                Some(stage)
            }
            None => None,
        };
        Ok(Pipeline {
            processor,
            detect,
            reorder: ReorderBuffer::new(cfg.max_out_of_orderness_ms, cfg.reorder_capacity),
            watermark: i64::MIN,
            proc_out: Vec::new(),
            alerts: Vec::new(),
            released: Vec::new(),
            counts: PipelineCounts::default(),
        })
    }

    /// Entitlements evaluated by the runner, supplied on every start.
    pub fn supply_grants(&mut self, grants: Arc<IdentityGrants>) {
        self.processor.supply_grants(grants);
    }

    /// Offers one event; processes whatever the reorder buffer releases.
    pub fn push(&mut self, ev: Box<Event>, tag: u32, state: &dyn StateRead) -> Result<(), StageError> {
        let t = ev.time.millis();
        let mut due = Vec::new();
        self.reorder.push(t, (ev, tag), &mut |r| due.push(r));
        for r in due {
            self.process(r, state)?;
        }
        Ok(())
    }

    /// Caps the reorder buffer's watermark (see [`ReorderBuffer::set_limit`]) and processes what is due.
    pub fn set_limit(&mut self, limit: Option<i64>, state: &dyn StateRead) -> Result<(), StageError> {
        let mut due = Vec::new();
        self.reorder.set_limit(limit, &mut |r| due.push(r));
        for r in due {
            self.process(r, state)?;
        }
        Ok(())
    }

    /// End of input: processes everything held, then closes every open hour window and incident.
    pub fn finish(&mut self, state: &dyn StateRead) -> Result<(), StageError> {
        let mut due = Vec::new();
        self.reorder.drain(&mut |r| due.push(r));
        for r in due {
            self.process(r, state)?;
        }
        if let Some(detect) = &mut self.detect {
            detect.on_watermark(EventTime(i64::MAX / 4), &mut Cx { state, out: &mut self.alerts })?;
        }
        Ok(())
    }

    fn process(&mut self, r: Released<(Box<Event>, u32)>, state: &dyn StateRead) -> Result<(), StageError> {
        let (ev, tag) = r.item;
        self.released.push(tag);
        let c = &mut self.counts;
        if r.late {
            c.late += 1;
        }
        c.first_event = Some(c.first_event.map_or(ev.time, |f| f.min(ev.time)));
        c.last_event = Some(c.last_event.map_or(ev.time, |l| l.max(ev.time)));
        let ev = match &mut self.detect {
            Some(detect) => {
                let input = DetectInput::Event(ev);
                detect.process(&input, &mut Cx { state, out: &mut self.alerts })?;
                match input {
                    DetectInput::Event(ev) => ev,
                    DetectInput::Pci(_) => return Ok(()),
                }
            }
            None => ev,
        };
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
            }
        }
        let t = r.time_ms;
        if t > self.watermark {
            self.watermark = t;
            self.processor.on_watermark(EventTime(t), &mut Cx { state, out: &mut self.proc_out })?;
            for o in self.proc_out.drain(..) {
                if let ProcessorOutput::Pci(u) = o {
                    self.counts.pci_updates += 1;
                    if let Some(detect) = &mut self.detect {
                        detect.process(&DetectInput::Pci(u), &mut Cx { state, out: &mut self.alerts })?;
                    }
                }
            }
            if let Some(detect) = &mut self.detect {
                detect.on_watermark(EventTime(t), &mut Cx { state, out: &mut self.alerts })?;
            }
        }
        self.proc_out.clear();
        Ok(())
    }

    /// Events held in the reorder buffer.
    pub fn held(&self) -> usize {
        self.reorder.len()
    }

    /// Pending state writes of both stages.
    pub fn pending(&self) -> usize {
        self.processor.pending() + self.detect.as_ref().map_or(0, Stage::pending)
    }

    pub fn snapshot(&mut self, batch: &mut WriteBatch) -> Result<(), StageError> {
        self.processor.snapshot(batch)?;
        if let Some(d) = &mut self.detect {
            d.snapshot(batch)?;
        }
        Ok(())
    }

    pub fn committed(&mut self) {
        self.processor.committed();
        if let Some(d) = &mut self.detect {
            d.committed();
        }
    }

    /// Alerts produced since the last call.
    pub fn take_alerts(&mut self) -> Vec<DetectionFinding> {
        std::mem::take(&mut self.alerts)
    }

    /// Tags of the events processed since the last call.
    pub fn take_released(&mut self) -> Vec<u32> {
        std::mem::take(&mut self.released)
    }

    pub fn counts(&self) -> &PipelineCounts {
        &self.counts
    }

    pub fn detect_counts(&self) -> Option<&DetectCounts> {
        self.detect.as_ref().map(|d| &d.counts)
    }

    pub fn take_windows(&mut self) -> Vec<TrainingWindow> {
        self.detect.as_mut().map(DetectStage::take_windows).unwrap_or_default()
    }
}
