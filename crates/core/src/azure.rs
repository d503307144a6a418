//! Azure: entitlements from RBAC and Entra ID exports, and activity from the Activity Log and Entra sign-in
//! logs. Pure: bytes in, data out (the runners read the files).
//!
//! * [`export`]: one export file's bytes (JSON or JSON Lines, already decompressed) → typed documents,
//!   recognized by content: role definitions, role assignments, deny assignments, Microsoft Graph users,
//!   groups and service principals, the management-group hierarchy, the subscription list, or a bundle
//!   of those.
//! * [`entitlements`]: an [`AzureInventory`] (the documents of many files) → one
//!   [`crate::policy::IdentityGrants`] per principal per subscription, and [`is_admin`].
//! * [`activity`]: one Activity Log record or one Entra sign-in record → [`grantwatch_types::Event`].
//!
//! Ids: Azure GUIDs (object ids, subscription ids, role definition names) are compared and reported
//! lower-case, since exports spell them in either case (the diagnostic export upper-cases whole resource
//! ids). ARM scopes and resource ids are compared ASCII-case-insensitively and reported as written.
//! `docs/azure.md` describes the inputs, the rules and the approximations.

pub mod activity;
pub mod entitlements;
pub mod export;
mod lenient;

pub use activity::{normalize_activity, normalize_signin};
pub use entitlements::{AzureEntitlements, AzureInventory, evaluate, identity_uid, is_admin};
pub use export::{AzureExport, ExportError, parse_export};
