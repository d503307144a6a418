//! Detection: events (and PCI updates) in, explained alerts grouped into incidents out.
//!
//! - [`sigma`]: SigmaHQ rules evaluated on a CloudTrail-shaped view of each normalized event.
//! - [`rules`]: grantwatch's built-in CIEM rules (single events and short sequences) and the rule
//!   configuration (enable, severity, suppression, allowlists) every analytic obeys.
//! - [`history`]: what each identity did before (actions, resources, regions, source IPs, user agents,
//!   hours), kept in state: first-time anomalies and the novelty features of the models.
//! - [`features`] and [`ml`]: per identity-hour behavior features, and linfa models (per identity and
//!   per peer group) trained by `grantwatch train`.
//! - [`alert`] and [`incident`]: the explained alert every analytic raises, and its grouping into one
//!   incident per (analytic, identity) with a count.
//! - [`load`]: reading the rules and model directories (this crate's only IO).
//! - [`stage`]: the detection stage that runs all of the above, driven by the file runner
//!   (`grantwatch analyze`) or the Kafka runner (`grantwatch-detector`).

pub mod alert;
pub mod features;
pub mod history;
pub mod incident;
pub mod load;
pub mod ml;
pub mod rules;
pub mod sigma;
pub mod stage;
