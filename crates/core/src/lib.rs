//! grantwatch's pure logic.
//!
//! Everything here is a function of its inputs: no file, network or clock access, no globals. Reference
//! data (the AWS action catalog, the CloudTrail mappings) is compiled in with `include_bytes!` and parsed
//! on request. The runners in `services/` read files and Kafka topics and hand the bytes to these modules;
//! the same modules therefore serve `grantwatch analyze` and the streaming services.
//!
//! * [`catalog`]: the AWS IAM action catalog, wildcard expansion, access levels, risk tags.
//! * [`glob`]: the one wildcard (`*`, `?`) matcher, in the dialects IAM actions, resources and allowlists use.
//! * [`iam`]: parsing `aws iam get-account-authorization-details` (and `list-access-keys`) output.
//! * [`policy`]: effective permissions per identity (Allow/Deny, NotAction, boundaries, groups, resources).
//! * [`escalation`]: the privilege-escalation graph, shortest paths to an administrator, reachable actions.
//! * [`azure`]: Azure RBAC and Entra ID exports → identities' grants; Activity Log and sign-in records → events.
//! * [`access`]: one request exactly (identity, boundary, resource and trust policies, SCPs): who can, who can assume.
//! * [`condition`]: the conditions a request's context can judge (`aws:CurrentTime` under the date operators).
//! * [`cloudtrail`]: one CloudTrail record to one [`grantwatch_types::Event`], with its IAM actions.
//! * [`shape`]: which log a record comes from (CloudTrail, Azure, Entra, GCP, Okta, Workspace).
//! * [`usage`]: the usage-accounting stage: events in, state writes out (dedup, last-used, per-day).
//! * [`findings`]: granted vs used, PCI, status flags, account roll-up.
//! * [`idp`]: Okta, Google Workspace and IAM Identity Center exports and activity logs.
//! * [`humans`]: one human across clouds: linking identities to people, and their findings.
//! * [`gcp`]: GCP IAM exports to identity grants (hierarchy, groups, deny policies, impersonation), Cloud Audit Logs to events.

pub mod access;
pub mod azure;
pub mod catalog;
pub mod cloudtrail;
pub mod condition;
pub mod escalation;
pub mod findings;
pub mod gcp;
pub mod glob;
pub mod history;
pub mod humans;
pub mod iam;
pub mod idp;
pub mod org;
pub mod pci;
pub mod policy;
pub mod policygen;
pub mod processor;
pub mod remediate;
pub mod shape;
pub mod stage;
pub mod time_guard;
pub mod usage;

/// Event fixtures for unit tests, here and in crates built on this one (feature `testing`).
#[cfg(any(test, feature = "testing"))]
pub mod testing;
