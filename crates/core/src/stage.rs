//! The shape every pipeline step has: pure, driven by a runner that does the IO.
//!
//! A stage sees one input at a time, may read state through [`Cx::state`], appends outputs to
//! [`Cx::out`], and keeps its own pending writes until the runner asks for them with
//! [`Stage::snapshot`]. The runner then writes those writes in one atomic [`WriteBatch`] together with
//! its own progress marker (ingested files for `grantwatch analyze`, consumed offsets for the Kafka
//! services), so state and progress never disagree after a crash.

use grantwatch_state::keys::KeySpace;
use grantwatch_state::{StateError, StateRead, WriteBatch};
use grantwatch_types::EventTime;

/// What a stage may touch while processing one input.
pub struct Cx<'a, O> {
    pub state: &'a dyn StateRead,
    pub out: &'a mut Vec<O>,
}

/// A stage failed. Input problems are not stage errors: they are rejected before a stage sees them.
#[derive(Debug, thiserror::Error)]
pub enum StageError {
    #[error(transparent)]
    State(#[from] StateError),
}

/// Decodes a JSON value stored under `key` of `space`; one that does not decode is
/// [`StateError::Corrupt`], never a default. The reason gives serde's category and position, not its
/// message, which would quote the stored text.
pub fn decode_json<T: serde::de::DeserializeOwned>(
    space: &KeySpace,
    key: &[u8],
    value: &[u8],
) -> Result<T, StateError> {
    serde_json::from_slice(value).map_err(|e| {
        space.corrupt(
            key,
            format!(
                "{} does not decode ({:?} error at line {}, column {})",
                space.value,
                e.classify(),
                e.line(),
                e.column()
            ),
        )
    })
}

/// One pipeline step: no IO, no clock, no globals.
pub trait Stage {
    type In;
    type Out;

    fn process(&mut self, input: &Self::In, cx: &mut Cx<'_, Self::Out>) -> Result<(), StageError>;

    /// Event time has advanced to `watermark`: close windows, emit what is due.
    fn on_watermark(&mut self, _watermark: EventTime, _cx: &mut Cx<'_, Self::Out>) -> Result<(), StageError> {
        Ok(())
    }

    /// Moves the pending writes into `batch`; afterwards the stage holds none.
    fn snapshot(&mut self, batch: &mut WriteBatch) -> Result<(), StageError>;

    /// The batch of the last [`Stage::snapshot`] is durably written (state reads now see it).
    fn committed(&mut self) {}

    /// How many writes are pending: runners snapshot when it grows past their budget (flat memory).
    fn pending(&self) -> usize;
}
