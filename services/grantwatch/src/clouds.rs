//! `analyze`'s inputs beyond AWS: Azure and GCP exports and logs, the identity providers'
//! directories and the human mapping file. The loading lives in `grantwatch_runtime::clouds`, shared
//! with `grantwatch-ingest`, which publishes the same entitlements.

pub use grantwatch_runtime::clouds::*;
