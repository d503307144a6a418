use std::sync::OnceLock;

use grantwatch_types::{ActionMapping, IdentityKind, Status};

use super::*;

fn normalizer() -> &'static GcpNormalizer {
    static N: OnceLock<GcpNormalizer> = OnceLock::new();
    N.get_or_init(|| GcpNormalizer::new(crate::gcp::entitlements::tests::catalog()).expect("table"))
}

fn n(raw: &str) -> Result<Event, NormalizeError> {
    normalizer().normalize(raw.as_bytes())
}

const PUBSUB: &str = include_str!("../testdata/audit/LogEntryData-pubsubCreateTopic.json");
const MONITORING: &str = include_str!("../testdata/audit/LogEntryData-monitoringCreateTimeSeries.json");
const BIGQUERY: &str = include_str!("../testdata/audit/LogEntryData-bigqueryjobcompleted.json");
const COMPUTE: &str = include_str!("../testdata/audit/compute-instances-insert-method-only.json");
const DENIED: &str = include_str!("../testdata/audit/storage-buckets-list-denied.json");
const FLOW: &str = include_str!("../testdata/audit/not-audit-flow-log.json");

#[test]
fn the_table_is_loaded() {
    // Most of the vendored table's permissions are in the catalog (both come from the same roles).
    assert!(normalizer().table_len() > 3000, "{}", normalizer().table_len());
}

#[test]
fn authorization_info_gives_the_permissions() {
    let e = n(PUBSUB).unwrap();
    assert_eq!(e.uid, "projects/test-project/logs/cloudaudit.googleapis.com%2Factivity/9frck8cf9j");
    assert_eq!(e.time.to_rfc3339(), "2020-06-30T16:14:47.593Z");
    assert_eq!((e.cloud, e.account_uid.as_str(), e.region.as_str()), (Cloud::Gcp, "test-project", "global"));
    assert_eq!(e.actor.uid, "gcp:projects/test-project/serviceAccount:robot@test-project.iam.gserviceaccount.com");
    assert_eq!(e.actor.kind, IdentityKind::ServiceAccount);
    assert_eq!(e.actor.name.as_deref(), Some("robot@test-project.iam.gserviceaccount.com"));
    assert_eq!(e.actor.access_key_id.as_deref(), Some("90f662482321f1ca8e82ea675b1a1c30c1fe681f"));
    assert_eq!(
        (e.api.service.as_str(), e.api.operation.as_str()),
        ("pubsub.googleapis.com", "google.pubsub.v1.Publisher.CreateTopic")
    );
    assert_eq!(e.actions, ["pubsub.topics.create"]);
    assert_eq!(e.mapping, ActionMapping::Direct);
    assert_eq!(e.resources, ["projects/test-project/topics/test-auditlogs-source"]);
    assert_eq!((e.status, e.status_code.as_deref()), (Status::Success, None));
    assert_eq!((e.src_ip.as_deref(), e.user_agent.as_deref()), (Some("192.168.0.1"), Some("google-cloud-sdk")));
    assert_eq!(e.read_only, Some(false));
    assert!(e.request.as_ref().unwrap().get().contains("test-auditlogs-source"));
    assert!(e.response.as_ref().unwrap().get().contains("allowedPersistenceRegions"));
    let additional = e.additional.as_ref().unwrap().parse().unwrap();
    assert_eq!(additional["logName"], "projects/test-project/logs/cloudaudit.googleapis.com%2Factivity");
    assert_eq!(additional["resource"]["type"], "pubsub_topic");
    assert_eq!(additional["authorizationInfo"][0]["granted"], true);

    // A Data Access write: the permission's verb (create) says it is no read.
    let m = n(MONITORING).unwrap();
    assert_eq!(
        (m.actions.as_slice(), m.mapping, m.read_only),
        (&["monitoring.timeSeries.create".to_string()][..], ActionMapping::Direct, Some(false))
    );
}

#[test]
fn method_name_alone_is_mapped_through_the_table() {
    let e = n(COMPUTE).unwrap();
    assert_eq!(e.actions, ["compute.instances.create"]);
    assert_eq!(e.mapping, ActionMapping::Exception);
    assert_eq!(e.region, "europe-west1", "the zone's region");
    assert_eq!(e.actor.uid, "gcp:projects/shop-prod/serviceAccount:ci@shop-prod.iam.gserviceaccount.com");
    assert_eq!(e.actor.on_behalf_of.as_deref(), Some("carol@example.com"), "who impersonated the account");
    assert_eq!(e.actor.principal_id.as_deref(), Some("serviceAccount:ci@shop-prod.iam.gserviceaccount.com"));
    // Kept for a write, with the password redacted.
    let req = e.request.as_ref().unwrap().parse().unwrap();
    assert_eq!(req["rootPassword"], "<redacted>");
    assert_eq!(req["serviceAccounts"][0]["email"], "runtime@shop-prod.iam.gserviceaccount.com");
    assert!(e.additional.as_ref().unwrap().parse().unwrap().get("authorizationInfo").is_none());

    // Heuristics beyond the table: a versioned compute method and SetIamPolicy on a project.
    let nz = normalizer();
    assert_eq!(
        nz.method_permission("compute.googleapis.com", "v9.compute.firewalls.patch", None)
            .map(|id| nz.catalog().name(id)),
        Some("compute.firewalls.update")
    );
    assert_eq!(
        nz.method_permission("cloudresourcemanager.googleapis.com", "SetIamPolicy", Some("projects/shop-prod"))
            .map(|id| nz.catalog().name(id)),
        Some("resourcemanager.projects.setIamPolicy")
    );
}

#[test]
fn permission_denied_is_a_failure() {
    let e = n(DENIED).unwrap();
    assert_eq!(e.status, Status::Failure);
    assert_eq!(e.status_code.as_deref(), Some("PERMISSION_DENIED"));
    assert_eq!(e.error_message.as_deref(), Some("PERMISSION_DENIED"));
    assert_eq!(e.actions, ["storage.buckets.list"]);
    assert_eq!(e.actor.uid, "gcp:projects/shop-prod/user:dave@example.com", "emails lowercased");
    assert_eq!(e.actor.kind, IdentityKind::User);
    assert_eq!((e.region.as_str(), e.read_only), ("eu", Some(true)));
    assert!(e.request.is_none() && e.additional.is_none(), "reads keep no documents");
}

#[test]
fn entries_without_the_audit_type_in_an_audit_log_are_read() {
    // The BigQuery sample has no @type; its log is cloudaudit.googleapis.com/data_access.
    let e = n(BIGQUERY).unwrap();
    assert_eq!(e.api.operation, "jobservice.jobcompleted");
    assert_eq!(e.mapping, ActionMapping::Unmapped);
    assert!(e.actions.is_empty());
    assert_eq!(e.read_only, Some(true), "Data Access of unknown verb");
    assert_eq!(e.status, Status::Success, "empty status is OK");
}

#[test]
fn non_audit_entries_are_not_api_activity() {
    assert!(matches!(n(FLOW), Err(NormalizeError::NotApiActivity(_))));
    let other_type = r#"{"insertId":"a","timestamp":"2024-01-01T00:00:00Z","logName":"projects/p/logs/x","protoPayload":{"@type":"type.googleapis.com/google.appengine.logging.v1.RequestLog"}}"#;
    assert_eq!(
        n(other_type).unwrap_err(),
        NormalizeError::NotApiActivity(
            "protoPayload type type.googleapis.com/google.appengine.logging.v1.RequestLog".to_string()
        )
    );
    assert!(!looks_like_audit_entry(FLOW.as_bytes()));
    assert!(looks_like_audit_entry(PUBSUB.as_bytes()));
}

#[test]
fn malformed_entries_say_what_is_wrong() {
    let base = |proto: &str| {
        format!(
            r#"{{"insertId":"i1","timestamp":"2024-01-01T00:00:00Z","logName":"projects/p/logs/cloudaudit.googleapis.com%2Factivity","protoPayload":{proto}}}"#
        )
    };
    assert_eq!(
        n(&base(r#"{"@type":"type.googleapis.com/google.cloud.audit.AuditLog","serviceName":"iam.googleapis.com"}"#))
            .unwrap_err(),
        NormalizeError::Missing("protoPayload.methodName")
    );
    let no_id = r#"{"timestamp":"2024-01-01T00:00:00Z","logName":"projects/p/logs/cloudaudit.googleapis.com%2Factivity","protoPayload":{"@type":"type.googleapis.com/google.cloud.audit.AuditLog","serviceName":"s","methodName":"m"}}"#;
    assert_eq!(n(no_id).unwrap_err(), NormalizeError::Missing("insertId"));
    let bad_time = PUBSUB.replace("2020-06-30T16:14:47.593398572Z", "yesterday");
    assert_eq!(n(&bad_time).unwrap_err(), NormalizeError::BadTime("yesterday".to_string()));
    assert!(matches!(n("[1,2]"), Err(NormalizeError::Json(_))));
    assert!(matches!(n(r#"{"insertId": "#), Err(NormalizeError::Json(_))));
    let bad_authz = base(
        r#"{"@type":"type.googleapis.com/google.cloud.audit.AuditLog","serviceName":"s","methodName":"m","authorizationInfo":{"permission":"x"}}"#,
    );
    let err = n(&bad_authz).unwrap_err();
    assert!(err.to_string().contains("protoPayload.authorizationInfo"), "{err}");
    // Fields of the wrong type read as absent rather than failing the entry.
    let odd = base(
        r#"{"@type":"type.googleapis.com/google.cloud.audit.AuditLog","serviceName":"s","methodName":"m","resourceName":42,"status":{"code":"7"}}"#,
    );
    let e = n(&odd).unwrap();
    assert!(e.resources.is_empty());
    assert_eq!(e.status_code.as_deref(), Some("PERMISSION_DENIED"));
    // No principal at all: Google acting (System Event).
    assert_eq!(e.actor.uid, "gcp:service:s");
    assert_eq!(e.actor.kind, IdentityKind::Service);
}

#[test]
fn organization_logs_and_test_iam_permissions() {
    let raw = r#"{"insertId":"o1","timestamp":"2024-01-01T00:00:00Z","logName":"organizations/6/logs/cloudaudit.googleapis.com%2Factivity",
      "resource":{"type":"organization","labels":{}},
      "protoPayload":{"@type":"type.googleapis.com/google.cloud.audit.AuditLog","serviceName":"cloudresourcemanager.googleapis.com",
        "methodName":"TestIamPermissions","resourceName":"organizations/6","authenticationInfo":{"principalEmail":"alice@example.com"}}}"#;
    let e = n(raw).unwrap();
    assert_eq!(e.account_uid, "organizations/6");
    assert_eq!(e.actor.uid, "gcp:organizations/6/user:alice@example.com");
    assert_eq!(e.mapping, ActionMapping::NoPermission);
}

#[test]
fn truncated_or_mangled_entries_never_panic() {
    for text in [PUBSUB, MONITORING, BIGQUERY, COMPUTE, DENIED, FLOW] {
        for cut in (0..text.len()).step_by(7) {
            let _ = normalizer().normalize(&text.as_bytes()[..cut]);
        }
        // Every string value replaced by a number, every number by a string.
        let mangled = text.replace("\": \"", "\": 1, \"x\": \"").replace("\"code\": 7", "\"code\": \"seven\"");
        let _ = normalizer().normalize(mangled.as_bytes());
    }
}
