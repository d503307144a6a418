//! IAM members (`user:a@x`, `serviceAccount:...`, `principal://...`) and deny-policy principals
//! (`principal://goog/subject/...`), spelled one way so they can be compared.

use grantwatch_types::IdentityKind;

/// What an allow-policy member names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MemberKind {
    User,
    ServiceAccount,
    Group,
    /// `domain:example.com`: every account of a Workspace / Cloud Identity domain.
    Domain,
    /// `allUsers`, `allAuthenticatedUsers`: not identities; reported as public exposures.
    Public,
    /// `principal://` / `principalSet://` of a workforce identity pool: people signed in through an outside IdP.
    Workforce,
    /// `principal://` / `principalSet://` of a workload identity pool (GKE, AWS, OIDC workloads).
    Workload,
    /// `projectOwner:P`, `projectEditor:P`, `projectViewer:P` (convenience values of bucket and legacy
    /// policies): whoever holds that basic role on project P.
    Convenience,
    Unknown,
}

impl MemberKind {
    /// The identity kind grantwatch reports for a member of this kind (documented in docs/gcp.md).
    pub(crate) fn identity_kind(self) -> IdentityKind {
        match self {
            MemberKind::User => IdentityKind::User,
            MemberKind::ServiceAccount | MemberKind::Workload => IdentityKind::ServiceAccount,
            MemberKind::Group | MemberKind::Domain => IdentityKind::Group,
            MemberKind::Workforce | MemberKind::Public | MemberKind::Convenience | MemberKind::Unknown => {
                IdentityKind::External
            }
        }
    }
}

/// A member in canonical spelling: the type prefix as IAM writes it, the email lowercased (IAM compares
/// emails case-insensitively), `deleted:` and `?uid=` stripped (a deleted principal's bindings still name
/// it; the flag says so).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Member {
    pub(crate) key: String,
    pub(crate) kind: MemberKind,
    pub(crate) deleted: bool,
}

impl Member {
    /// The email of `user:`, `serviceAccount:`, `group:` members.
    pub(crate) fn email(&self) -> Option<&str> {
        match self.kind {
            MemberKind::User | MemberKind::ServiceAccount | MemberKind::Group => {
                self.key.split_once(':').map(|(_, e)| e)
            }
            _ => None,
        }
    }

    /// The name grantwatch shows: the email, the domain, else the member as written.
    pub(crate) fn display_name(&self) -> &str {
        match self.kind {
            MemberKind::User | MemberKind::ServiceAccount | MemberKind::Group | MemberKind::Domain => {
                self.key.split_once(':').map_or(self.key.as_str(), |(_, e)| e)
            }
            _ => &self.key,
        }
    }
}

pub(crate) fn parse_member(raw: &str) -> Member {
    let raw = raw.trim();
    let (deleted, rest) = match raw.strip_prefix("deleted:") {
        Some(r) => (true, r),
        None => (false, raw),
    };
    // `deleted:user:a@x?uid=123`: the uid tells recreated accounts apart; the email is the identity here.
    let rest = if deleted { rest.split_once("?uid=").map_or(rest, |(m, _)| m) } else { rest };
    if rest == "allUsers" || rest == "allAuthenticatedUsers" {
        return Member { key: rest.to_string(), kind: MemberKind::Public, deleted };
    }
    if rest.starts_with("principal://") || rest.starts_with("principalSet://") {
        let kind = if rest.contains("/workforcePools/") {
            MemberKind::Workforce
        } else if rest.contains("/workloadIdentityPools/") {
            MemberKind::Workload
        } else {
            MemberKind::Unknown
        };
        return Member { key: rest.to_string(), kind, deleted };
    }
    let Some((prefix, value)) = rest.split_once(':') else {
        return Member { key: rest.to_string(), kind: MemberKind::Unknown, deleted };
    };
    let kind = match prefix {
        "user" => MemberKind::User,
        "serviceAccount" => MemberKind::ServiceAccount,
        "group" => MemberKind::Group,
        "domain" => MemberKind::Domain,
        "projectOwner" | "projectEditor" | "projectViewer" => MemberKind::Convenience,
        _ => MemberKind::Unknown,
    };
    let value = match kind {
        MemberKind::User | MemberKind::ServiceAccount | MemberKind::Group | MemberKind::Domain => {
            value.to_ascii_lowercase()
        }
        _ => value.to_string(),
    };
    Member { key: format!("{prefix}:{value}"), kind, deleted }
}

/// The member key a service account's email becomes.
pub(crate) fn service_account_key(email: &str) -> String {
    format!("serviceAccount:{}", email.to_ascii_lowercase())
}

/// Whether an email is a service account's (Google's service-account domains all end so).
pub(crate) fn is_service_account_email(email: &str) -> bool {
    email.to_ascii_lowercase().ends_with(".gserviceaccount.com")
}

/// A deny-policy principal (v2 syntax) and what it matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum DenyPrincipal {
    /// Matches one member key exactly (`principal://goog/subject/a@x` = `user:a@x`; service accounts;
    /// workforce and workload principals as written).
    Member(String),
    /// `principalSet://goog/group/g@x`: the group and everyone in it.
    Group(String),
    /// `principalSet://goog/public:all`.
    Everyone,
    /// `principalSet://iam.googleapis.com/.../workforcePools/P/*` and similar: every member whose key starts so.
    Prefix(String),
    /// A set whose members an export cannot list (`principalSet://goog/cloudIdentityCustomerId/C...`,
    /// attribute sets): kept to be reported, never matched.
    Unresolvable(String),
}

pub(crate) fn parse_deny_principal(raw: &str) -> DenyPrincipal {
    let raw = raw.trim();
    if let Some(email) = raw.strip_prefix("principal://goog/subject/") {
        return DenyPrincipal::Member(format!("user:{}", email.to_ascii_lowercase()));
    }
    if let Some(email) = raw.strip_prefix("principalSet://goog/group/") {
        return DenyPrincipal::Group(format!("group:{}", email.to_ascii_lowercase()));
    }
    if raw == "principalSet://goog/public:all" {
        return DenyPrincipal::Everyone;
    }
    // principal://iam.googleapis.com/projects/-/serviceAccounts/SA_EMAIL (the project part may be `-`, an id or a number)
    if let Some(rest) = raw.strip_prefix("principal://iam.googleapis.com/projects/")
        && let Some((_, email)) = rest.split_once("/serviceAccounts/")
    {
        return DenyPrincipal::Member(service_account_key(email));
    }
    if raw.starts_with("principal://") {
        return DenyPrincipal::Member(raw.to_string());
    }
    if let Some(set) = raw.strip_prefix("principalSet://") {
        // `.../workforcePools/POOL/*` (everyone in the pool) and `.../workloadIdentityPools/POOL/*`.
        if let Some(pool) = set.strip_suffix("/*").filter(|p| p.starts_with("iam.googleapis.com/")) {
            return DenyPrincipal::Prefix(format!("principal://{pool}/"));
        }
    }
    DenyPrincipal::Unresolvable(raw.to_string())
}

impl DenyPrincipal {
    /// Whether `member` (a canonical key), belonging to `groups` (canonical group keys, transitively), is
    /// matched.
    pub(crate) fn matches(&self, member: &str, groups: &[String]) -> bool {
        match self {
            DenyPrincipal::Member(m) => m == member,
            DenyPrincipal::Group(g) => g == member || groups.iter().any(|x| x == g),
            DenyPrincipal::Everyone => true,
            DenyPrincipal::Prefix(p) => member.starts_with(p.as_str()),
            DenyPrincipal::Unresolvable(_) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_are_canonical() {
        let m = parse_member("user:Alice@Example.com");
        assert_eq!(
            (m.key.as_str(), m.kind, m.email()),
            ("user:alice@example.com", MemberKind::User, Some("alice@example.com"))
        );
        let d = parse_member("deleted:serviceAccount:old@p.iam.gserviceaccount.com?uid=123456");
        assert!(d.deleted);
        assert_eq!(d.key, "serviceAccount:old@p.iam.gserviceaccount.com");
        assert_eq!(parse_member("allUsers").kind, MemberKind::Public);
        let wf = parse_member("principal://iam.googleapis.com/locations/global/workforcePools/corp/subject/bob");
        assert_eq!(wf.kind.identity_kind(), IdentityKind::External);
        let wl = parse_member(
            "principalSet://iam.googleapis.com/projects/123/locations/global/workloadIdentityPools/gh/attribute.repository/o/r",
        );
        assert_eq!(wl.kind.identity_kind(), IdentityKind::ServiceAccount);
        assert_eq!(parse_member("projectOwner:my-proj").kind, MemberKind::Convenience);
        assert_eq!(parse_member("nonsense").kind, MemberKind::Unknown);
    }

    #[test]
    fn deny_principals_match_members() {
        let groups = vec!["group:ops@example.com".to_string()];
        assert!(
            parse_deny_principal("principal://goog/subject/ALICE@example.com").matches("user:alice@example.com", &[])
        );
        assert!(
            parse_deny_principal("principalSet://goog/group/ops@example.com").matches("user:bob@example.com", &groups)
        );
        assert!(
            !parse_deny_principal("principalSet://goog/group/ops@example.com").matches("user:bob@example.com", &[])
        );
        assert!(parse_deny_principal("principalSet://goog/public:all").matches("user:x@y", &[]));
        assert!(
            parse_deny_principal(
                "principal://iam.googleapis.com/projects/-/serviceAccounts/ci@p.iam.gserviceaccount.com"
            )
            .matches("serviceAccount:ci@p.iam.gserviceaccount.com", &[])
        );
        let pool = parse_deny_principal("principalSet://iam.googleapis.com/locations/global/workforcePools/corp/*");
        assert!(pool.matches("principal://iam.googleapis.com/locations/global/workforcePools/corp/subject/bob", &[]));
        assert!(!parse_deny_principal("principalSet://goog/cloudIdentityCustomerId/C0123").matches("user:x@y", &[]));
    }
}
