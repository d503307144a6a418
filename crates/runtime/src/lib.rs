//! `grantwatch-runtime`: what drives grantwatch's stages, apart from the stages themselves.
//!
//! * [`reorder`]: the bounded event-time reorder buffer (watermark = highest event time seen minus
//!   one out-of-orderness bound, [`DEFAULT_MAX_OUT_OF_ORDERNESS_MS`], shared by every mode).
//! * [`pipeline`]: one shard's stages in event-time order (usage + PCI, detection), IO-free.
//! * [`order`]: the order files are read in, and each file's delivery time.
//! * [`file_run`]: the file runner of `analyze`, `train` and `eval`: one read pass over the files,
//!   records normalized on every core, one atomic commit of state, progress and alert position.
//!
//! * [`clouds`]: Azure and GCP exports, the identity providers' directories and the human mapping
//!   into `IdentityGrants` with their humans (`analyze` and `grantwatch-ingest` alike).
//! * [`kafka`] (feature `kafka`): the Kafka driver of the services (tasks per partition, outbox,
//!   transactions), which drives the same stages and takes its watermark bound from here.

pub mod clouds;
pub mod file_run;
#[cfg(feature = "kafka")]
pub mod kafka;
pub mod order;
pub mod pipeline;
pub mod reorder;
pub mod scan;

/// How far out of event-time order events may arrive before stages count them late: more than
/// CloudTrail's ~15 minutes of delivery spread between files. One setting for every runner.
pub const DEFAULT_MAX_OUT_OF_ORDERNESS_MS: i64 = 20 * 60 * 1000;

/// Events the reorder buffer holds at most. At CloudTrail's busiest (thousands of events a second in
/// one organization) this is minutes of events; past it, events are processed early, counted late.
pub const DEFAULT_REORDER_CAPACITY: usize = 100_000;
