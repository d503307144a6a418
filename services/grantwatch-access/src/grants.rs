//! What the service needs of AWS to install and remove a grant, as a trait: the real implementation
//! is `grantwatch_aws_iam::GrantClient`; the unit tests use an in-memory account.

use std::future::Future;
use std::pin::Pin;

use grantwatch_types::{GrantAction, RevokeAction};

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A failed AWS call, as text that is safe to log and store (code, message, request id; never a
/// credential).
pub type CallError = String;

pub trait Grants: Send + Sync + 'static {
    /// Checks made before a grant is installed: `Ok(Some(reason))` refuses it (the identity does not
    /// exist; the managed policy is already attached, so revoking it would take away access the
    /// identity had before).
    fn precheck<'a>(&'a self, action: &'a GrantAction) -> BoxFuture<'a, Result<Option<String>, CallError>>;
    /// Installs a grant. Idempotent: installing twice leaves one grant.
    fn install<'a>(&'a self, action: &'a GrantAction) -> BoxFuture<'a, Result<(), CallError>>;
    /// Removes a grant. Idempotent: "already gone" is success.
    fn revoke<'a>(&'a self, action: &'a RevokeAction) -> BoxFuture<'a, Result<(), CallError>>;
}
