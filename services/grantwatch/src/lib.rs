//! The `grantwatch` CLI as a library: the whole pipeline embedded in one process over local files.
//!
//! This crate is a runner: it reads files, drives the pure stages of `grantwatch-core` and writes the
//! state and the reports. It holds no CIEM logic of its own; a stage that only worked here would be a
//! leak (the Kafka services run the same stages).

pub mod access;
pub mod access_cli;
pub mod analyze;
pub mod clouds;
pub mod detect;
pub mod eval;
pub mod floor;
pub mod ondemand;
pub mod output;
pub mod policy_generate;
pub mod remediate;
pub mod remediate_apply;
pub mod report;
pub mod rss;
pub mod serve;
pub mod train;
