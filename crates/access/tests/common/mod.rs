//! What the access tests share: the AWS catalog (loaded once), the rules, request builders.
#![allow(dead_code, unreachable_pub)]

use std::sync::{Arc, LazyLock};

use grantwatch_access::{AccessConfig, AccessLedger};
use grantwatch_core::catalog::Catalog;
use grantwatch_state::MemStore;
use grantwatch_types::{AccessRequest, ActionGrant, EventTime, RequestedAccess, RequestedIdentity};

pub static CATALOG: LazyLock<Arc<Catalog>> =
    LazyLock::new(|| Arc::new(Catalog::aws().expect("the embedded catalog loads")));

pub const PROD: &str = "111111111111";
pub const SANDBOX: &str = "222222222222";

pub const RULES: &str = r#"
administrator_like = ["OrgAdmin"]
read_only = ["ViewOnlyAccess"]

[revocation]
lease_secs = 60
retry_base_secs = 10
retry_cap_secs = 100
alert_after_failures = 3

[[rule]]
name = "prod"
accounts = ["111111111111"]
approvers = ["alice", "bob", "group:secops"]
max_duration_secs = 3600

[[rule]]
name = "sandbox"
accounts = ["2*"]
approvers = ["alice", "bob"]
max_duration_secs = 28800
auto_approve_low_risk = true
"#;

pub fn config() -> AccessConfig {
    AccessConfig::from_toml(RULES).expect("the test rules parse")
}

pub fn ledger(store: Arc<MemStore>) -> AccessLedger<Arc<MemStore>> {
    AccessLedger::open(store, config(), CATALOG.clone())
}

pub fn t(secs: i64) -> EventTime {
    // 2025-01-01T00:00:00Z plus `secs`.
    EventTime(1_735_689_600_000 + secs * 1000)
}

pub fn actions(list: &[(&str, &[&str])]) -> RequestedAccess {
    RequestedAccess::Actions {
        grants: list
            .iter()
            .map(|(a, r)| ActionGrant { action: a.to_string(), resources: r.iter().map(|s| s.to_string()).collect() })
            .collect(),
    }
}

pub fn request(id: &str, account: &str, access: RequestedAccess) -> AccessRequest {
    AccessRequest {
        id: id.to_string(),
        identity: RequestedIdentity::IamUser { arn: format!("arn:aws:iam::{account}:user/dev/carol") },
        access,
        duration_secs: 600,
        justification: "INC-42: read the failing job's logs".to_string(),
        ticket: Some("INC-42".to_string()),
        requester: "carol".to_string(),
        account_id: account.to_string(),
    }
}

pub fn read_request(id: &str, account: &str) -> AccessRequest {
    request(id, account, actions(&[("s3:GetObject", &["arn:aws:s3:::logs/*"])]))
}

pub fn write_request(id: &str, account: &str) -> AccessRequest {
    request(id, account, actions(&[("s3:PutObject", &["arn:aws:s3:::logs/*"])]))
}

pub fn admin_request(id: &str, account: &str) -> AccessRequest {
    request(id, account, actions(&[("iam:AttachUserPolicy", &[&format!("arn:aws:iam::{account}:user/dev/carol")])]))
}
