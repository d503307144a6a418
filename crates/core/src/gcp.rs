//! Google Cloud: IAM exports to [`crate::policy::IdentityGrants`], Cloud Audit Logs to [`grantwatch_types::Event`].
//!
//! Pure, like the rest of this crate: the runner reads and decompresses the files and hands their bytes here.
//!
//! * [`export`]: one export file (JSON, a JSON array or JSON Lines) recognized by its content and parsed into a
//!   [`GcpInventory`]: IAM policies (Cloud Asset Inventory, `get-iam-policy`), the resource hierarchy, deny
//!   policies, custom roles, service accounts and their keys, groups with members.
//! * [`entitlements`]: the inventory to one [`crate::policy::IdentityGrants`] per (member, project), the public
//!   exposures (`allUsers`, `allAuthenticatedUsers`), service-account impersonation edges and administrators.
//! * [`audit`]: one Cloud Audit Log `LogEntry` to one [`grantwatch_types::Event`], with the IAM permissions it
//!   exercised (`authorizationInfo`, else the vendored methodName table `data/gcp/audit-method-permissions.json.gz`).
//!
//! `docs/gcp.md` describes the accepted inputs and the rules.

pub mod audit;
pub mod entitlements;
pub mod export;
mod member;

pub use audit::GcpNormalizer;
pub use entitlements::{GcpEntitlements, PublicExposure, entitlements, impersonation_edges, is_admin};
pub use export::{ExportError, GcpInventory, parse_export};
