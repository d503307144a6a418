//! Permissions on demand, the IO-free core: an identity gets extra AWS permissions for a limited time,
//! on request and approval, and loses them on time, exactly once, even if the service was down when
//! the time ran out.
//!
//! * [`validate`]: checking a request (identity and resource ARNs in the target account, actions in the
//!   catalog, duration within its rule, a justification) and judging its [`grantwatch_types::RiskLevel`].
//! * [`config`]: the approval rules (TOML): approvers per account pattern, maximum durations,
//!   auto-approval of low-risk requests, administrator-like policies, revocation retry settings.
//! * [`transition`]: the transition table, [`transition::next`], the only judge of legality.
//! * [`policy`]: what a grant installs (an inline policy with a `DateLessThan aws:CurrentTime` lock, a
//!   managed policy attachment, a permission set assignment) and what revoking it removes, as data.
//! * [`ledger`]: requests, their append-only transition logs and the expiry index over a
//!   [`grantwatch_state::StateStore`], one atomic batch per transition; and the revocation scheduler
//!   (`due`, `claim` with a lease, `complete` with capped exponential backoff and an alert).
//!
//! Nothing here reads a clock, makes a network call or spawns a thread: the service passes "now" and
//! performs the AWS calls the ledger describes (`docs/access-on-demand.md`).

pub mod config;
pub mod ledger;
pub mod policy;
pub mod transition;
pub mod validate;

pub use config::{AccessConfig, ApprovalRule, ConfigError, RevocationConfig};
pub use ledger::{
    AccessError, AccessLedger, Applied, GrantToRevoke, RevokeOutcome, RevokeTicket, all_records, due, due_limited,
    for_each_record, verify_index,
};
pub use transition::{TransitionError, next};
pub use validate::ValidationError;

/// An authenticated principal acting on a request, with the groups the authentication layer vouches
/// for (an approver entry `group:<name>` admits members).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub name: String,
    pub groups: Vec<String>,
}

impl Principal {
    pub fn new(name: impl Into<String>) -> Self {
        Self { name: name.into(), groups: Vec::new() }
    }

    pub fn with_groups(name: impl Into<String>, groups: impl IntoIterator<Item = impl Into<String>>) -> Self {
        Self { name: name.into(), groups: groups.into_iter().map(Into::into).collect() }
    }
}
