//! The two consuming services as [`App`]s of the runner: how Kafka records become stage inputs and
//! stage outputs become records. The stages are the ones `grantwatch analyze` runs.

use std::sync::Arc;

use grantwatch_core::catalog::Catalog;
use grantwatch_core::processor::{ProcessorConfig, ProcessorInput, ProcessorOutput, ProcessorStage};
use grantwatch_core::stage::StageError;
use grantwatch_detect::stage::{DetectInput, DetectStage, Detection};
use grantwatch_state::StateRead;
use grantwatch_types::{ACCESS_EVENT_SCHEMA, AccessAuditEvent, DetectionFinding, EventTime};

use crate::kafka::client::Emit;
use crate::kafka::config::Topics;
use crate::kafka::runner::App;

/// `grantwatch-processor`: events and entitlements in; PCI updates and Discover findings out.
///
/// Aligned on the entitlements (`await_entitlements`): a window closes once the entitlements topic is
/// complete up to its end, with the entitlements of that time; and it writes a watermark mark to the
/// PCI topic after each window it closes, for the detector to align on.
pub struct ProcessorApp {
    pub topics: Topics,
    pub catalog: Arc<Catalog>,
    pub cfg: ProcessorConfig,
    pub await_entitlements: bool,
}

impl ProcessorApp {
    /// The last window boundary the stage has closed at `watermark`.
    fn boundary(&self, watermark: i64) -> i64 {
        watermark.div_euclid(self.cfg.window_ms).saturating_mul(self.cfg.window_ms)
    }
}

impl App for ProcessorApp {
    type Stage = ProcessorStage;

    fn name(&self) -> &'static str {
        "grantwatch-processor"
    }

    fn inputs(&self) -> Vec<String> {
        vec![self.topics.events.name.clone(), self.topics.entitlements.name.clone()]
    }

    fn open_stage(&self, state: &dyn StateRead) -> Result<ProcessorStage, StageError> {
        ProcessorStage::open(self.catalog.clone(), self.cfg.clone(), state)
    }

    fn decode(&self, input: usize, _key: Option<&[u8]>, payload: &[u8]) -> Result<ProcessorInput, String> {
        if input == 0 {
            serde_json::from_slice(payload)
                .map(|e| ProcessorInput::Event(Box::new(e)))
                .map_err(|e| format!("not an event: {e}"))
        } else {
            serde_json::from_slice(payload)
                .map(|r| ProcessorInput::Entitlements(Box::new(r)))
                .map_err(|e| format!("not an entitlements record: {e}"))
        }
    }

    fn event_time(&self, input: &ProcessorInput) -> Option<EventTime> {
        match input {
            ProcessorInput::Event(e) => Some(e.time),
            ProcessorInput::Entitlements(_) => None,
        }
    }

    fn side_input(&self) -> Option<usize> {
        self.await_entitlements.then_some(1)
    }

    fn side_time(&self, input: &ProcessorInput) -> Option<EventTime> {
        match input {
            ProcessorInput::Entitlements(r) => r.as_of,
            ProcessorInput::Event(_) => None,
        }
    }

    /// Closing the window that ends at the boundary needs the entitlements as of that boundary.
    fn side_needed(&self, watermark: i64) -> i64 {
        self.boundary(watermark)
    }

    /// Every PCI update up to the next boundary (exclusive) is out once this watermark is seen.
    fn output_mark(&self, watermark: i64) -> Option<(&str, i64)> {
        let next = self.boundary(watermark).saturating_add(self.cfg.window_ms);
        Some((self.topics.pci.name.as_str(), next.saturating_sub(1)))
    }

    fn encode(&self, out: ProcessorOutput, emits: &mut Vec<Emit>) {
        let (topic, key, payload, kind) = match out {
            ProcessorOutput::Pci(u) => (&self.topics.pci.name, u.arn.clone(), serde_json::to_vec(&u), "pci"),
            ProcessorOutput::Finding(f) => {
                (&self.topics.findings.name, f.actor.user.uid.clone(), serde_json::to_vec(&f), "finding")
            }
            ProcessorOutput::Proposal(p) => {
                (&self.topics.remediation.name, p.identity.clone(), serde_json::to_vec(&p), "proposal")
            }
        };
        match payload {
            Ok(payload) => {
                emits.push(Emit { partition: None, topic: topic.clone(), key: Some(key.into_bytes()), payload, kind })
            }
            Err(e) => tracing::error!(error = %e, "cannot serialize an output"),
        }
    }
}

/// `grantwatch-detector`: events and PCI updates in; alerts (OCSF Detection Findings) out.
///
/// Aligned on the PCI updates (`await_pci`): an event is processed once the processor's marks say every
/// PCI update up to the event's watermark is on the topic, and an update takes effect when the watermark
/// reaches its `as_of`, so each event meets the PCI of its time. Late events are counted here but
/// copied to the late topic by the processor only. Every task reads the access service's audit topic
/// whole (a broadcast input): the on-demand grants it judges calls against.
pub struct DetectorApp {
    pub topics: Topics,
    pub detection: Arc<Detection>,
    pub await_pci: bool,
}

impl App for DetectorApp {
    type Stage = DetectStage;

    fn name(&self) -> &'static str {
        "grantwatch-detector"
    }

    fn inputs(&self) -> Vec<String> {
        vec![self.topics.events.name.clone(), self.topics.pci.name.clone()]
    }

    fn open_stage(&self, state: &dyn StateRead) -> Result<DetectStage, StageError> {
        DetectStage::open(self.detection.clone(), state)
    }

    fn decode(&self, input: usize, _key: Option<&[u8]>, payload: &[u8]) -> Result<DetectInput, String> {
        if input == 0 {
            serde_json::from_slice(payload)
                .map(|e| DetectInput::Event(Box::new(e)))
                .map_err(|e| format!("not an event: {e}"))
        } else {
            serde_json::from_slice(payload)
                .map(|u| DetectInput::Pci(Box::new(u)))
                .map_err(|e| format!("not a PCI update: {e}"))
        }
    }

    fn event_time(&self, input: &DetectInput) -> Option<EventTime> {
        match input {
            DetectInput::Event(e) => Some(e.time),
            // PCI updates are stamped with the window boundary they close, which is behind the events
            // that caused them: they must not hold the watermark back or move it. Access events are
            // reference data, judged by the times they carry.
            DetectInput::Pci(_) | DetectInput::Access(_) => None,
        }
    }

    fn side_input(&self) -> Option<usize> {
        self.await_pci.then_some(1)
    }

    fn side_time(&self, input: &DetectInput) -> Option<EventTime> {
        match input {
            DetectInput::Pci(u) => Some(u.as_of),
            _ => None,
        }
    }

    fn routes_late(&self) -> bool {
        false
    }

    fn broadcast_input(&self) -> Option<String> {
        Some(self.topics.access.name.clone())
    }

    fn decode_broadcast(&self, payload: &[u8]) -> Result<DetectInput, String> {
        let ev: AccessAuditEvent =
            serde_json::from_slice(payload).map_err(|e| format!("not an access audit event: {e}"))?;
        if ev.schema != ACCESS_EVENT_SCHEMA {
            return Err(format!("schema {:?}, expected {ACCESS_EVENT_SCHEMA}", ev.schema));
        }
        Ok(DetectInput::Access(Box::new(ev)))
    }

    fn encode(&self, out: DetectionFinding, emits: &mut Vec<Emit>) {
        match serde_json::to_vec(&out) {
            Ok(payload) => emits.push(Emit {
                partition: None,
                topic: self.topics.alerts.name.clone(),
                key: Some(out.actor.user.uid.into_bytes()),
                payload,
                kind: "alert",
            }),
            Err(e) => tracing::error!(error = %e, "cannot serialize an alert"),
        }
    }
}
