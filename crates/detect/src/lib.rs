//! Detection: events (and PCI updates) in, explained alerts grouped into incidents out.
//!
//! - [`sigma`]: SigmaHQ rules evaluated on a CloudTrail-shaped view of each normalized event.
//! - [`rules`]: grantwatch's built-in CIEM rules (single events and short sequences) and the rule
//!   configuration (enable, severity, suppression, allowlists) every analytic obeys.
//! - [`history`]: what each identity did before (actions, resources, regions, source IPs, user agents,
//!   hours), kept in state: first-time anomalies and the novelty features of the models.
//! - [`features`] and [`ml`]: per identity-hour behavior features, and linfa models (per identity and
//!   per peer group) trained by `grantwatch train`.
//! - `analytics` (crate-private): what is alert-worthy. Each analytic (single-event and Sigma rules,
//!   first-time and dormancy, bulk reads, sequences and grants, model scoring of a closed hour, PCI
//!   transitions) looks at one input against the identity's profile and returns what it raises; the
//!   rule configuration then turns what passes into drafts. No stage, no OCSF.
//! - `build` (crate-private): drafts to OCSF Detection Findings: analytics that fired on one event
//!   merged into one alert, the explanation (descriptions, evidence, ATT&CK), and the grouping into
//!   incidents.
//! - [`alert`] and [`incident`]: the evidence that explains every alert, and an incident: one analytic
//!   firing on one identity, its repeats counted, emitted as a Create and (if it grew) an Update.
//! - [`ondemand`]: permissions on demand, folded from the access service's audit events: whether a
//!   call uses a grant within its window (expected), after it ended, or whether an IAM change grants
//!   to an on-demand identity outside grantwatch.
//! - [`load`]: reading the rules and model directories (this crate's only IO).
//! - [`stage`]: the detection stage, driven by the file runner (`grantwatch analyze`) or the Kafka
//!   runner (`grantwatch-detector`): runs the analytics on each input, hands their drafts to `build`,
//!   and keeps the state (profiles, open incidents and windows, seen events) in the task's store.

pub mod alert;
mod analytics;
mod build;
pub mod features;
pub mod history;
pub mod incident;
pub mod load;
pub mod ml;
pub mod multicloud;
pub mod ondemand;
pub mod rules;
pub mod sigma;
pub mod stage;
