//! `grantwatch-aws-iam`: IAM changes made through the AWS API, journaled and reversible, and the
//! account's export. The only user of `aws-sdk-iam`, `aws-sdk-sts` and `aws-sdk-ssoadmin`.
//!
//! * [`apply()`]: a remediation plan's changes for the caller's account, in the plan's order (per
//!   identity: additions first, removals after, so access never widens past `before` mid-way), each
//!   journaled before and after; refused whole, before any call, when an identity's live state is not
//!   the plan's `before` (or, on a re-run, the state the journal left). A re-run continues where the
//!   journal stops.
//! * [`rollback()`]: what a journal changed, restored newest first, journaled in the same file.
//! * [`attach()`]: one policy attached or detached, journaled the same way.
//! * [`AwsIam::export`]: `get-account-authorization-details` (+ access keys) as `analyze --iam` reads it.
//! * [`GrantClient`]: the access service's async client: installs and revokes what a grant of
//!   permissions on demand names (inline policy, managed policy attachment, Identity Center account
//!   assignment), every call bounded by timeouts, revocations idempotent ([`grant`]).
//!
//! Layout: the decisions are pure ([`state`]: effects, drift; [`apply::check_order`],
//! [`rollback::undo_of`]; [`journal::steps`]), the runs are written against the [`IamApi`] trait (the
//! unit tests drive them over an in-memory account), and [`AwsIam`] is the thin SDK layer. Nothing
//! here prints a credential: the SDK's configuration is never formatted, errors carry AWS's code,
//! message and request id only. Output goes to the `Write` the CLI passes; the clock too is the CLI's.
//!
//! `docs/remediation-apply.md` describes the journal, the order of calls, resume, drift and the IAM
//! permissions the commands need.

pub mod api;
pub mod apply;
pub mod attach;
mod aws;
mod exec;
pub mod grant;
pub mod journal;
pub mod render;
pub mod rollback;
pub mod state;

#[cfg(test)]
mod tests;

use std::path::PathBuf;

pub use api::{ApiError, ApiErrorKind, CallOutput, Caller, IamApi, PolicyState};
pub use apply::apply;
pub use attach::attach;
pub use aws::{AwsConfig, AwsIam};
pub use exec::{Outcome, RunOptions, RunSummary};
pub use grant::{GrantClient, GrantClientOptions};
pub use journal::Journal;
pub use rollback::rollback;

/// What went wrong. `Display` says what was being done.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The tokio runtime the client needs could not start.
    #[error("starting the AWS client: {0}")]
    Runtime(std::io::Error),
    /// An AWS request failed; `what` names the call.
    #[error("{what}: {error}")]
    Api { what: String, error: ApiError },
    /// The journal could not be read or written, or does not parse.
    #[error("journal {}: {message}", path.display())]
    Journal { path: PathBuf, message: String },
    /// The input asks for something the run will not do (a plan out of order, another account, a
    /// journal of another plan, a policy that exists with another document).
    #[error("{0}")]
    Refused(String),
    /// Writing to the output failed.
    #[error("writing the output: {0}")]
    Output(std::io::Error),
}

/// `--account` must name the caller's account: it guards against running with the wrong credentials.
pub(crate) fn check_account(opts: &RunOptions<'_>, caller: &str) -> Result<(), Error> {
    match &opts.account {
        Some(a) if a != caller => {
            Err(Error::Refused(format!("--account {a}, but the credentials act in account {caller}: nothing done")))
        }
        _ => Ok(()),
    }
}
