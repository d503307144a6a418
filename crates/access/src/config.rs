//! The approval rules, a TOML document:
//!
//! ```toml
//! administrator_like = ["arn:aws:iam::123456789012:policy/BreakGlass", "OrgAdmin"]
//! read_only = ["ViewOnlyAccess"]
//!
//! [revocation]
//! lease_secs = 300
//! retry_base_secs = 30
//! retry_cap_secs = 3600
//! alert_after_failures = 3
//!
//! [[rule]]
//! name = "production"
//! accounts = ["111111111111", "2222*"]
//! approvers = ["alice", "group:secops"]
//! max_duration_secs = 3600
//! auto_approve_low_risk = false
//! ```
//!
//! The first rule whose account pattern matches the target account governs a request.

use grantwatch_core::glob::Glob;
use serde::{Deserialize, Serialize};

/// The prefix that makes an approver entry a group.
pub const GROUP_PREFIX: &str = "group:";

/// Managed policies (by name) and permission sets that are administrator-like whatever the
/// configuration says: each grants IAM itself, or everything but IAM.
pub const BUILTIN_ADMINISTRATOR_LIKE: [&str; 3] = ["AdministratorAccess", "PowerUserAccess", "IAMFullAccess"];

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessConfig {
    /// Longest justification accepted, in characters.
    #[serde(default = "default_justification_max_chars")]
    pub justification_max_chars: usize,
    /// Managed policies (ARN or name) and permission sets (name) to treat as administrator: high risk.
    #[serde(default)]
    pub administrator_like: Vec<String>,
    /// Managed policies (ARN or name) and permission sets (name) known to be read-only: low risk.
    /// Without an entry here a policy or permission set is medium (its content is not known here).
    #[serde(default)]
    pub read_only: Vec<String>,
    #[serde(default)]
    pub revocation: RevocationConfig,
    #[serde(default, rename = "rule")]
    pub rules: Vec<ApprovalRule>,
}

fn default_justification_max_chars() -> usize {
    1000
}

/// One approval rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApprovalRule {
    pub name: String,
    /// Account id patterns (`*` matches any run of digits).
    pub accounts: Vec<String>,
    /// Principals, or groups as `group:<name>`.
    pub approvers: Vec<String>,
    pub max_duration_secs: u64,
    /// Low-risk requests (read-only actions) are approved on submission, by `system`.
    #[serde(default)]
    pub auto_approve_low_risk: bool,
}

/// How the revocation scheduler retries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevocationConfig {
    /// How long a claim holds a grant: a worker that has not completed by then is presumed dead.
    #[serde(default = "default_lease_secs")]
    pub lease_secs: u64,
    /// The wait after the first failed attempt; doubled after each further failure.
    #[serde(default = "default_retry_base_secs")]
    pub retry_base_secs: u64,
    /// The longest wait between attempts.
    #[serde(default = "default_retry_cap_secs")]
    pub retry_cap_secs: u64,
    /// Failures after which the grant carries an alert.
    #[serde(default = "default_alert_after_failures")]
    pub alert_after_failures: u32,
}

fn default_lease_secs() -> u64 {
    300
}
fn default_retry_base_secs() -> u64 {
    30
}
fn default_retry_cap_secs() -> u64 {
    3600
}
fn default_alert_after_failures() -> u32 {
    3
}

impl Default for RevocationConfig {
    fn default() -> Self {
        Self {
            lease_secs: default_lease_secs(),
            retry_base_secs: default_retry_base_secs(),
            retry_cap_secs: default_retry_cap_secs(),
            alert_after_failures: default_alert_after_failures(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("approval rules: {0}")]
    Toml(#[from] toml::de::Error),
    #[error("approval rules: {0}")]
    Invalid(String),
}

impl AccessConfig {
    /// Parses and checks the approval rules.
    pub fn from_toml(text: &str) -> Result<AccessConfig, ConfigError> {
        let config: AccessConfig = toml::from_str(text)?;
        config.check()?;
        Ok(config)
    }

    /// What parsing alone cannot say: empty lists, zero durations, duplicate names.
    pub fn check(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        if self.justification_max_chars == 0 {
            return bad("justification_max_chars must be at least 1".into());
        }
        let r = &self.revocation;
        if r.lease_secs == 0 || r.retry_base_secs == 0 {
            return bad("revocation.lease_secs and revocation.retry_base_secs must be at least 1".into());
        }
        if r.retry_cap_secs < r.retry_base_secs {
            return bad("revocation.retry_cap_secs must be at least revocation.retry_base_secs".into());
        }
        if r.alert_after_failures == 0 {
            return bad("revocation.alert_after_failures must be at least 1".into());
        }
        for (i, rule) in self.rules.iter().enumerate() {
            if rule.name.trim().is_empty() {
                return bad(format!("rule {} has no name", i + 1));
            }
            if self.rules[..i].iter().any(|r| r.name == rule.name) {
                return bad(format!("rule name {:?} is used twice", rule.name));
            }
            if rule.accounts.is_empty() || rule.accounts.iter().any(|a| a.is_empty()) {
                return bad(format!("rule {:?}: accounts must list at least one non-empty pattern", rule.name));
            }
            if let Some(a) = rule.accounts.iter().find(|a| !a.bytes().all(|b| b.is_ascii_digit() || b == b'*')) {
                return bad(format!("rule {:?}: account pattern {a:?} may hold only digits and '*'", rule.name));
            }
            if rule.approvers.is_empty() || rule.approvers.iter().any(|a| a.trim().is_empty() || a == GROUP_PREFIX) {
                return bad(format!("rule {:?}: approvers must list at least one principal or group", rule.name));
            }
            if rule.max_duration_secs == 0 {
                return bad(format!("rule {:?}: max_duration_secs must be at least 1", rule.name));
            }
        }
        Ok(())
    }

    /// The rule governing `account_id`: the first that matches.
    pub fn rule_for(&self, account_id: &str) -> Option<&ApprovalRule> {
        self.rules.iter().find(|r| r.accounts.iter().any(|p| Glob::STAR_ONLY.matches(p, account_id)))
    }

    pub fn rule_named(&self, name: &str) -> Option<&ApprovalRule> {
        self.rules.iter().find(|r| r.name == name)
    }

    /// Whether a managed policy (ARN or name) or permission set (name) is administrator-like.
    pub fn is_administrator_like(&self, arn_or_name: &str) -> bool {
        let name = policy_name_of(arn_or_name);
        BUILTIN_ADMINISTRATOR_LIKE.iter().any(|b| b.eq_ignore_ascii_case(name))
            || listed(&self.administrator_like, arn_or_name)
    }

    pub fn is_read_only(&self, arn_or_name: &str) -> bool {
        listed(&self.read_only, arn_or_name)
    }
}

/// An entry with a `:` is an ARN and must match exactly; otherwise it names the policy or permission
/// set (case-insensitively, as IAM treats policy names).
fn listed(list: &[String], arn_or_name: &str) -> bool {
    let name = policy_name_of(arn_or_name);
    list.iter().any(|e| if e.contains(':') { e == arn_or_name } else { e.eq_ignore_ascii_case(name) })
}

/// `arn:aws:iam::aws:policy/job-function/ViewOnlyAccess` → `ViewOnlyAccess`; a bare name is itself.
fn policy_name_of(arn_or_name: &str) -> &str {
    arn_or_name.rsplit('/').next().unwrap_or(arn_or_name)
}

impl ApprovalRule {
    /// Whether `principal` (with its groups) is one of this rule's approvers.
    pub fn allows_approver(&self, principal: &crate::Principal) -> bool {
        self.approvers.iter().any(|entry| match entry.strip_prefix(GROUP_PREFIX) {
            Some(group) => principal.groups.iter().any(|g| g == group),
            None => *entry == principal.name,
        })
    }

    /// How many distinct people could ever approve under this rule: a group counts as many.
    pub fn approver_capacity(&self) -> usize {
        if self.approvers.iter().any(|a| a.starts_with(GROUP_PREFIX)) {
            return usize::MAX;
        }
        let mut names: Vec<&str> = self.approvers.iter().map(String::as_str).collect();
        names.sort_unstable();
        names.dedup();
        names.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RULES: &str = r#"
        administrator_like = ["arn:aws:iam::111111111111:policy/BreakGlass", "OrgAdmin"]
        read_only = ["ViewOnlyAccess"]
        [revocation]
        lease_secs = 60
        [[rule]]
        name = "prod"
        accounts = ["1111*"]
        approvers = ["alice", "group:secops"]
        max_duration_secs = 3600
        [[rule]]
        name = "sandbox"
        accounts = ["*"]
        approvers = ["bob"]
        max_duration_secs = 28800
        auto_approve_low_risk = true
    "#;

    #[test]
    fn rules_parse_with_defaults_and_match_accounts_in_order() {
        let c = AccessConfig::from_toml(RULES).unwrap();
        assert_eq!(c.revocation.lease_secs, 60);
        assert_eq!(c.revocation.retry_cap_secs, 3600);
        assert_eq!(c.justification_max_chars, 1000);
        assert_eq!(c.rule_for("111122223333").unwrap().name, "prod");
        assert_eq!(c.rule_for("999999999999").unwrap().name, "sandbox");
        assert!(c.is_administrator_like("arn:aws:iam::aws:policy/AdministratorAccess"));
        assert!(c.is_administrator_like("arn:aws:iam::111111111111:policy/BreakGlass"));
        assert!(!c.is_administrator_like("arn:aws:iam::222222222222:policy/BreakGlass"));
        assert!(c.is_administrator_like("orgadmin"));
        assert!(c.is_read_only("arn:aws:iam::aws:policy/job-function/ViewOnlyAccess"));
    }

    #[test]
    fn bad_rules_are_refused_with_the_reason() {
        let e = AccessConfig::from_toml("[[rule]]\nname='x'\naccounts=['1']\napprovers=[]\nmax_duration_secs=1")
            .unwrap_err();
        assert_eq!(e.to_string(), "approval rules: rule \"x\": approvers must list at least one principal or group");
        let e = AccessConfig::from_toml("[[rule]]\nname='x'\naccounts=['1']\napprovers=['a']\nmax_duration_secs=0")
            .unwrap_err();
        assert!(e.to_string().contains("max_duration_secs"), "{e}");
        let e = AccessConfig::from_toml("[[rule]]\nname='x'\naccounts=['12-3']\napprovers=['a']\nmax_duration_secs=1")
            .unwrap_err();
        assert!(e.to_string().contains("only digits"), "{e}");
        assert!(AccessConfig::from_toml("unknown_key = 1").is_err());
        let two = "[[rule]]\nname='x'\naccounts=['1']\napprovers=['a']\nmax_duration_secs=1\n";
        assert!(AccessConfig::from_toml(&format!("{two}{two}")).unwrap_err().to_string().contains("twice"));
    }
}
