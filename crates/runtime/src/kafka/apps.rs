//! The two consuming services as [`App`]s of the runner: how Kafka records become stage inputs and
//! stage outputs become records. The stages are the ones `grantwatch analyze` runs.

use std::sync::Arc;

use grantwatch_core::catalog::Catalog;
use grantwatch_core::processor::{ProcessorConfig, ProcessorInput, ProcessorOutput, ProcessorStage};
use grantwatch_core::stage::StageError;
use grantwatch_detect::stage::{DetectInput, DetectStage, Detection};
use grantwatch_state::StateRead;
use grantwatch_types::{DetectionFinding, EventTime};

use crate::kafka::client::Emit;
use crate::kafka::config::Topics;
use crate::kafka::runner::App;

/// `grantwatch-processor`: events and entitlements in; PCI updates and Discover findings out.
pub struct ProcessorApp {
    pub topics: Topics,
    pub catalog: Arc<Catalog>,
    pub cfg: ProcessorConfig,
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

    fn encode(&self, out: ProcessorOutput, emits: &mut Vec<Emit>) {
        let (topic, key, payload, kind) = match out {
            ProcessorOutput::Pci(u) => (&self.topics.pci.name, u.arn.clone(), serde_json::to_vec(&u), "pci"),
            ProcessorOutput::Finding(f) => {
                (&self.topics.findings.name, f.actor.user.uid.clone(), serde_json::to_vec(&f), "finding")
            }
        };
        match payload {
            Ok(payload) => emits.push(Emit { topic: topic.clone(), key: Some(key.into_bytes()), payload, kind }),
            Err(e) => tracing::error!(error = %e, "cannot serialize an output"),
        }
    }
}

/// `grantwatch-detector`: events and PCI updates in; alerts (OCSF Detection Findings) out.
pub struct DetectorApp {
    pub topics: Topics,
    pub detection: Arc<Detection>,
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
            // that caused them: they must not hold the watermark back or move it.
            DetectInput::Pci(_) => None,
        }
    }

    fn encode(&self, out: DetectionFinding, emits: &mut Vec<Emit>) {
        match serde_json::to_vec(&out) {
            Ok(payload) => emits.push(Emit {
                topic: self.topics.alerts.name.clone(),
                key: Some(out.actor.user.uid.into_bytes()),
                payload,
                kind: "alert",
            }),
            Err(e) => tracing::error!(error = %e, "cannot serialize an alert"),
        }
    }
}
