//! The single-event rules of Azure, GCP, Okta and Google Workspace events: what is news in one call,
//! read from what the normalizers keep (`api.operation`, `actions`, `resources`, `request`,
//! `response`, `additional`; `docs/azure.md`, `docs/gcp.md`, `docs/identity-providers.md`).
//!
//! Where the meaning is the same as an AWS analytic's, the analytic is the same: an Azure diagnostic
//! setting or a GCP log sink deleted is `grantwatch/logging-disabled`, a GCP IAM policy binding
//! `allUsers` is `grantwatch/resource-made-public`. The others are new analytics of their own
//! ([`Builtin::AzurePrivilegedRoleAssigned`], ...). Names are compared without case: the Azure
//! diagnostic export writes operations in upper case, the list shape in the provider's spelling.

use grantwatch_types::{Cloud, Event, Status};
use serde_json::Value;

use crate::rules::{Builtin, RuleHit};

/// Azure built-in roles whose holder can grant anyone (itself included) any role in its scope: Owner,
/// User Access Administrator, Role Based Access Control Administrator. By role definition GUID, the
/// same in every tenant.
const PRIVILEGED_AZURE_ROLES: [(&str, &str); 3] = [
    ("8e3af657-a8ff-443c-a75c-2fe8c4bcb635", "Owner"),
    ("18d7d88d-d35e-4fb5-a5c3-7773c20a72d9", "User Access Administrator"),
    ("f58310d9-a9f6-439a-9e8d-f62e7b41a168", "Role Based Access Control Administrator"),
];

/// The members that make a GCP resource public.
const PUBLIC_MEMBERS: [&str; 2] = ["allUsers", "allAuthenticatedUsers"];

/// Okta System Log event types that remove a second factor: one user's factor, all of a user's
/// factors (a reset), or a factor type for the whole org.
const OKTA_MFA_REMOVED: [&str; 3] =
    ["user.mfa.factor.deactivate", "user.mfa.factor.reset_all", "system.mfa.factor.deactivate"];

/// Okta System Log event types that give administrator privileges, to a user or to a group.
const OKTA_ADMIN_GRANTED: [&str; 2] = ["user.account.privilege.grant", "group.privilege.grant"];

fn op_is(ev: &Event, op: &str) -> bool {
    ev.api.operation.eq_ignore_ascii_case(op)
}

fn lower_op(ev: &Event) -> String {
    ev.api.operation.to_ascii_lowercase()
}

/// The call, as every hit names it.
fn call(ev: &Event) -> Vec<(String, String)> {
    let mut m =
        vec![("eventName".to_string(), ev.api.operation.clone()), ("eventSource".to_string(), ev.api.service.clone())];
    if ev.status == Status::Failure
        && let Some(code) = &ev.status_code
    {
        m.push(("errorCode".to_string(), code.clone()));
    }
    m
}

fn hit(rule: Builtin, ev: &Event, extra: Vec<(&str, String)>) -> RuleHit {
    let mut matched = call(ev);
    matched.extend(extra.into_iter().map(|(k, v)| (k.to_string(), v)));
    RuleHit { rule, matched, attempt: false }
}

/// The member `key` of object `v`, compared without case (Azure writes `Properties.RoleDefinitionId`
/// in request bodies and `properties.roleDefinitionId` in responses).
fn get_ci<'a>(v: &'a Value, key: &str) -> Option<&'a Value> {
    v.as_object()?.iter().find(|(k, _)| k.eq_ignore_ascii_case(key)).map(|(_, v)| v)
}

fn str_ci<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    get_ci(v, key)?.as_str()
}

/// Audit logging turned off in Azure or GCP, for [`Builtin::LoggingDisabled`] (failed attempts too:
/// the caller reports them one severity lower). What was turned off, or `None`.
pub fn logging_disabled(ev: &Event, request: Option<&Value>) -> Option<String> {
    match ev.cloud {
        Cloud::Azure => {
            let op = lower_op(ev);
            let what = if op.ends_with("microsoft.insights/diagnosticsettings/delete")
                || op == "microsoft.aadiam/diagnosticsettings/delete"
            {
                "diagnostic setting deleted"
            } else if op.ends_with("microsoft.insights/logprofiles/delete") {
                "Activity Log profile deleted"
            } else {
                return None;
            };
            Some(match ev.resources.first() {
                Some(r) => format!("{what}: {r}"),
                None => what.to_string(),
            })
        }
        Cloud::Gcp => {
            let op = lower_op(ev);
            let acts = |p: &str| ev.actions.iter().any(|a| a.eq_ignore_ascii_case(p));
            let resource = ev.resources.first().map(String::as_str).unwrap_or("");
            if op.ends_with("configservicev2.deletesink") || acts("logging.sinks.delete") {
                Some(format!("log sink deleted: {resource}"))
            } else if op.ends_with("configservicev2.deletebucket") || acts("logging.buckets.delete") {
                Some(format!("log bucket deleted: {resource}"))
            } else if op.ends_with("configservicev2.updatesink") || acts("logging.sinks.update") {
                // A sink update that sets `disabled`: the sink stays, its logs stop.
                let disabled = request.and_then(|r| get_ci(r, "sink")).and_then(|s| get_ci(s, "disabled"));
                (disabled.and_then(Value::as_bool) == Some(true)).then(|| format!("log sink disabled: {resource}"))
            } else {
                None
            }
        }
        _ => None,
    }
}

/// The single-event rules of the other clouds, on a successful call.
pub fn single_event_rules(ev: &Event, request: Option<&Value>, response: Option<&Value>, out: &mut Vec<RuleHit>) {
    if ev.status != Status::Success {
        return;
    }
    match ev.cloud {
        Cloud::Azure => azure(ev, request, response, out),
        Cloud::Gcp => gcp(ev, request, response, out),
        Cloud::Okta => okta(ev, out),
        Cloud::GoogleWorkspace => workspace(ev, out),
        Cloud::Aws => {}
    }
}

/// What a role assignment body says: the role's GUID and the principal it is given to.
struct Assignment {
    role: String,
    principal: Option<String>,
    principal_type: Option<String>,
    scope: Option<String>,
}

/// Reads a role assignment's request (`{"Properties": {"RoleDefinitionId": ".../roleDefinitions/<guid>",
/// "PrincipalId", "PrincipalType", "Scope"}}`) or response (the same in camelCase).
fn assignment(body: &Value) -> Option<Assignment> {
    let props = get_ci(body, "properties").unwrap_or(body);
    let role_id = str_ci(props, "roleDefinitionId")?;
    let role = role_id.rsplit('/').next().unwrap_or(role_id).to_ascii_lowercase();
    if role.is_empty() {
        return None;
    }
    let s = |k: &str| str_ci(props, k).map(str::to_string);
    Some(Assignment { role, principal: s("principalId"), principal_type: s("principalType"), scope: s("scope") })
}

fn azure(ev: &Event, request: Option<&Value>, response: Option<&Value>, out: &mut Vec<RuleHit>) {
    if op_is(ev, "Microsoft.Authorization/elevateAccess/action") {
        out.push(hit(Builtin::AzureElevateAccess, ev, vec![("scope", "/".to_string())]));
        return;
    }
    if !op_is(ev, "Microsoft.Authorization/roleAssignments/write") {
        return;
    }
    // The response is the assignment as created; the request (rarely on the final record) what was asked.
    match response.and_then(assignment).or_else(|| request.and_then(assignment)) {
        Some(a) => {
            // A known role that is not privileged is routine access management: the first-time and
            // high-risk analytics judge the caller's habit, not this rule.
            let Some((_, name)) = PRIVILEGED_AZURE_ROLES.iter().find(|(guid, _)| *guid == a.role) else { return };
            let mut extra = vec![("role", format!("{name} ({})", a.role))];
            if let Some(p) = a.principal {
                extra.push(("principalId", p));
            }
            if let Some(t) = a.principal_type {
                extra.push(("principalType", t));
            }
            if let Some(s) = a.scope.or_else(|| ev.resources.first().cloned()) {
                extra.push(("scope", s));
            }
            out.push(hit(Builtin::AzurePrivilegedRoleAssigned, ev, extra));
        }
        None => {
            let assignment = ev.resources.first().cloned().unwrap_or_default();
            out.push(hit(Builtin::AzureRoleAssignmentCreated, ev, vec![("roleAssignment", assignment)]));
        }
    }
}

fn gcp(ev: &Event, request: Option<&Value>, response: Option<&Value>, out: &mut Vec<RuleHit>) {
    let op = lower_op(ev);
    let acts = |p: &str| ev.actions.iter().any(|a| a.eq_ignore_ascii_case(p));
    if op.ends_with("createserviceaccountkey")
        || op.ends_with("uploadserviceaccountkey")
        || acts("iam.serviceAccountKeys.create")
    {
        // `projects/-/serviceAccounts/{email or unique id}`; the key's name is in the response.
        let account = request
            .and_then(|r| str_ci(r, "name"))
            .map(str::to_string)
            .or_else(|| ev.resources.first().cloned())
            .unwrap_or_default();
        let mut extra = vec![("serviceAccount", account)];
        if let Some(key) = response.and_then(|r| str_ci(r, "name")) {
            extra.push(("key", key.rsplit('/').next().unwrap_or(key).to_string()));
        }
        out.push(hit(Builtin::GcpServiceAccountKeyCreated, ev, extra));
    }
    if (op.ends_with("setiampolicy") || op == "storage.setiampermissions")
        && let Some(exposure) = request.and_then(public_binding)
    {
        let resource = ev.resources.first().cloned().unwrap_or_default();
        out.push(hit(Builtin::ResourceMadePublic, ev, vec![("exposure", format!("{exposure} on {resource}"))]));
    }
}

/// A binding to `allUsers` or `allAuthenticatedUsers` in a SetIamPolicy request (`policy.bindings`,
/// or `bindings` at the top as Compute writes it), as `role granted to member`.
fn public_binding(request: &Value) -> Option<String> {
    let from_policy = get_ci(request, "policy").and_then(|p| get_ci(p, "bindings"));
    let bindings = from_policy.or_else(|| get_ci(request, "bindings"))?.as_array()?;
    for b in bindings {
        let members = get_ci(b, "members").and_then(Value::as_array).into_iter().flatten();
        for m in members.filter_map(Value::as_str) {
            if let Some(public) = PUBLIC_MEMBERS.iter().find(|p| p.eq_ignore_ascii_case(m)) {
                let role = str_ci(b, "role").unwrap_or("a role");
                return Some(format!("{role} granted to {public}"));
            }
        }
    }
    None
}

/// The additional document's member at `pointer`, as text.
fn additional_text(ev: &Event, pointer: &str) -> Option<String> {
    let doc = ev.additional.as_ref()?.parse()?;
    match doc.pointer(pointer)? {
        Value::String(s) => Some(s.clone()),
        Value::Null => None,
        other => Some(other.to_string()),
    }
}

fn targets(ev: &Event) -> String {
    ev.resources.join(", ")
}

fn okta(ev: &Event, out: &mut Vec<RuleHit>) {
    let is = |types: &[&str]| types.iter().any(|t| op_is(ev, t));
    if is(&OKTA_MFA_REMOVED) {
        let mut extra = vec![("target", targets(ev))];
        if let Some(reason) = additional_text(ev, "/outcome/reason") {
            extra.push(("reason", reason));
        }
        out.push(hit(Builtin::MfaRemoved, ev, extra));
    }
    if is(&OKTA_ADMIN_GRANTED) {
        let mut extra = vec![("target", targets(ev))];
        if let Some(privilege) = additional_text(ev, "/debugData/privilegeGranted") {
            extra.push(("privilegeGranted", privilege));
        }
        out.push(hit(Builtin::IdpAdminGranted, ev, extra));
    }
}

/// A Reports activity parameter's value (`{name, value}`, or `boolValue` / `intValue`).
fn workspace_param(ev: &Event, name: &str) -> Option<String> {
    let doc = ev.additional.as_ref()?.parse()?;
    let p = doc.get("parameters")?.as_array()?.iter().find(|p| p.get("name").and_then(Value::as_str) == Some(name))?;
    ["value", "boolValue", "intValue"].iter().find_map(|k| match p.get(*k)? {
        Value::String(s) => Some(s.clone()),
        Value::Null => None,
        other => Some(other.to_string()),
    })
}

fn workspace(ev: &Event, out: &mut Vec<RuleHit>) {
    let app = ev.api.service.as_str();
    // A user (or an admin for them) turned 2-Step Verification off: logged by the login and
    // user_accounts applications.
    if op_is(ev, "2sv_disable") && matches!(app, "login" | "user_accounts") {
        out.push(hit(Builtin::MfaRemoved, ev, vec![("user", ev.actor.name.clone().unwrap_or_default())]));
    }
    // An administrator turned enforcement of 2-Step Verification off for an organizational unit.
    if app == "admin"
        && op_is(ev, "ENFORCE_STRONG_AUTHENTICATION")
        && workspace_param(ev, "NEW_VALUE").is_some_and(|v| v.eq_ignore_ascii_case("false"))
    {
        let unit = workspace_param(ev, "ORG_UNIT_NAME").unwrap_or_default();
        out.push(hit(Builtin::MfaRemoved, ev, vec![("enforcement", format!("off for {unit}"))]));
    }
    if app == "admin" && (op_is(ev, "ASSIGN_ROLE") || op_is(ev, "GRANT_ADMIN_PRIVILEGE")) {
        let mut extra = vec![("target", workspace_param(ev, "USER_EMAIL").unwrap_or_else(|| targets(ev)))];
        if let Some(role) = workspace_param(ev, "ROLE_NAME") {
            extra.push(("role", role));
        }
        out.push(hit(Builtin::IdpAdminGranted, ev, extra));
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::sync::{Arc, OnceLock};

    use grantwatch_core::catalog::Catalog;
    use grantwatch_core::gcp::GcpNormalizer;
    use grantwatch_core::idp::{okta, workspace};
    use serde_json::json;

    use super::*;
    use crate::rules::single_event_rules;

    fn catalog() -> Arc<Catalog> {
        static C: OnceLock<Arc<Catalog>> = OnceLock::new();
        C.get_or_init(|| Arc::new(Catalog::all_clouds().unwrap())).clone()
    }

    fn hits(ev: &Event) -> Vec<RuleHit> {
        let request = ev.request.as_ref().and_then(|r| r.parse());
        let response = ev.response.as_ref().and_then(|r| r.parse());
        let mut out = Vec::new();
        single_event_rules(ev, request.as_ref(), response.as_ref(), &mut out);
        out
    }

    fn rules(ev: &Event) -> Vec<Builtin> {
        hits(ev).into_iter().map(|h| h.rule).collect()
    }

    fn value<'a>(h: &'a RuleHit, key: &str) -> &'a str {
        h.matched.iter().find(|(k, _)| k == key).map_or("", |(_, v)| v.as_str())
    }

    const SUB: &str = "22222222-2222-4222-8222-222222222222";

    /// An Activity Log record in the diagnostic export's shape (upper-case names, claims of a user),
    /// `properties` as given.
    fn azure(op: &str, result: &str, resource: &str, properties: serde_json::Value) -> Event {
        let record = json!({
            "time": "2024-05-03T08:00:00.1000000Z",
            "resourceId": resource.to_ascii_uppercase(),
            "operationName": op.to_ascii_uppercase(),
            "category": "Administrative",
            "resultType": result,
            "resultSignature": if result == "Success" { "Succeeded.OK" } else { "Failed.Forbidden" },
            "callerIpAddress": "203.0.113.20",
            "correlationId": "c1c1c1c1-0000-4000-8000-000000000009",
            "identity": {
                "authorization": {"scope": resource, "action": op,
                    "evidence": {"role": "Owner", "roleAssignmentScope": format!("/subscriptions/{SUB}"), "principalType": "User"}},
                "claims": {
                    "http://schemas.microsoft.com/identity/claims/objectidentifier": "1a1a1a1a-0000-4000-8000-000000000003",
                    "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/upn": "carol@fabrikam.com",
                    "http://schemas.microsoft.com/claims/authnmethodsreferences": "pwd,mfa"
                }
            },
            "level": "Information",
            "properties": properties
        });
        grantwatch_core::azure::normalize_activity(record.to_string().as_bytes(), &catalog()).unwrap()
    }

    fn assignment_body(role_guid: &str) -> String {
        json!({
            "properties": {
                "roleDefinitionId": format!("/subscriptions/{SUB}/providers/Microsoft.Authorization/roleDefinitions/{role_guid}"),
                "principalId": "9f9f9f9f-0000-4000-8000-00000000000a",
                "principalType": "ServicePrincipal",
                "scope": format!("/subscriptions/{SUB}")
            },
            "id": format!("/subscriptions/{SUB}/providers/Microsoft.Authorization/roleAssignments/5e5e5e5e-0000-4000-8000-000000000001"),
            "type": "Microsoft.Authorization/roleAssignments",
            "name": "5e5e5e5e-0000-4000-8000-000000000001"
        })
        .to_string()
    }

    fn assignment_id() -> String {
        format!(
            "/subscriptions/{SUB}/providers/Microsoft.Authorization/roleAssignments/5e5e5e5e-0000-4000-8000-000000000001"
        )
    }

    #[test]
    fn azure_owner_given_to_a_service_principal_is_privileged() {
        let props = json!({"statusCode": "Created", "message": "Microsoft.Authorization/roleAssignments/write",
            "responseBody": assignment_body("8e3af657-a8ff-443c-a75c-2fe8c4bcb635")});
        let ev = azure("Microsoft.Authorization/roleAssignments/write", "Success", &assignment_id(), props);
        let h = hits(&ev);
        assert_eq!(h.len(), 1, "{h:?}");
        assert_eq!(h[0].rule, Builtin::AzurePrivilegedRoleAssigned);
        assert!(value(&h[0], "role").starts_with("Owner"), "{h:?}");
        assert_eq!(value(&h[0], "principalType"), "ServicePrincipal");
        assert_eq!(value(&h[0], "principalId"), "9f9f9f9f-0000-4000-8000-00000000000a");
        // The request's PascalCase shape (the Started record's) reads the same.
        let uaa = json!({"Properties": {"RoleDefinitionId": "/providers/Microsoft.Authorization/roleDefinitions/18d7d88d-d35e-4fb5-a5c3-7773c20a72d9",
            "PrincipalId": "x", "Scope": "/"}});
        let req = json!({"statusCode": "Created", "requestbody": uaa.to_string()});
        let ev = azure("Microsoft.Authorization/roleAssignments/write", "Success", &assignment_id(), req);
        assert_eq!(rules(&ev), [Builtin::AzurePrivilegedRoleAssigned]);
    }

    #[test]
    fn azure_other_roles_and_unknown_roles() {
        // Reader: access management, not this rule's business.
        let reader = json!({"responseBody": assignment_body("acdd72a7-3385-48ef-bd42-f606fba81ae7")});
        let ev = azure("Microsoft.Authorization/roleAssignments/write", "Success", &assignment_id(), reader);
        assert!(rules(&ev).is_empty());
        // No body on the final record: the role is unknown.
        let ev = azure("Microsoft.Authorization/roleAssignments/write", "Success", &assignment_id(), json!({}));
        let h = hits(&ev);
        assert_eq!(h.iter().map(|h| h.rule).collect::<Vec<_>>(), [Builtin::AzureRoleAssignmentCreated]);
        assert_eq!(value(&h[0], "roleAssignment").to_ascii_lowercase(), assignment_id().to_ascii_lowercase());
        // A denied assignment grants nothing.
        let ev = azure("Microsoft.Authorization/roleAssignments/write", "Failure", &assignment_id(), json!({}));
        assert!(rules(&ev).is_empty());
    }

    #[test]
    fn azure_elevate_access_and_logging_off() {
        let ev = azure(
            "Microsoft.Authorization/elevateAccess/action",
            "Success",
            "/providers/Microsoft.Authorization",
            json!({}),
        );
        assert_eq!(rules(&ev), [Builtin::AzureElevateAccess]);
        let diag = format!("/subscriptions/{SUB}/providers/microsoft.insights/diagnosticSettings/to-sentinel");
        let ev = azure("Microsoft.Insights/diagnosticSettings/delete", "Success", &diag, json!({}));
        let h = hits(&ev);
        assert_eq!(h.iter().map(|h| h.rule).collect::<Vec<_>>(), [Builtin::LoggingDisabled]);
        assert!(value(&h[0], "change").starts_with("diagnostic setting deleted"), "{h:?}");
        assert!(!h[0].attempt);
        // On a resource (an NSG's flow of logs), and a log profile.
        let nsg = "Microsoft.Network/networkSecurityGroups/providers/Microsoft.Insights/diagnosticSettings/delete";
        assert_eq!(rules(&azure(nsg, "Success", &diag, json!({}))), [Builtin::LoggingDisabled]);
        let profile = format!("/subscriptions/{SUB}/providers/microsoft.insights/logprofiles/default");
        let ev = azure("Microsoft.Insights/logProfiles/delete", "Success", &profile, json!({}));
        assert_eq!(rules(&ev), [Builtin::LoggingDisabled]);
        // A denied attempt is an attempt.
        let h = hits(&azure("Microsoft.Insights/diagnosticSettings/delete", "Failure", &diag, json!({})));
        assert!(h.len() == 1 && h[0].attempt, "{h:?}");
        // Writing a diagnostic setting is not deleting one.
        assert!(rules(&azure("Microsoft.Insights/diagnosticSettings/write", "Success", &diag, json!({}))).is_empty());
    }

    fn gcp(
        method: &str,
        service: &str,
        resource: &str,
        permission: &str,
        request: serde_json::Value,
        response: serde_json::Value,
    ) -> Event {
        let entry = json!({
            "protoPayload": {
                "@type": "type.googleapis.com/google.cloud.audit.AuditLog",
                "status": {},
                "authenticationInfo": {"principalEmail": "alice@example.com"},
                "requestMetadata": {"callerIp": "203.0.113.9", "callerSuppliedUserAgent": "google-cloud-sdk gcloud/470.0.0"},
                "serviceName": service,
                "methodName": method,
                "authorizationInfo": [{"resource": resource, "permission": permission, "granted": true, "resourceAttributes": {}}],
                "resourceName": resource,
                "request": request,
                "response": response
            },
            "insertId": "1x2y3z",
            "resource": {"type": "gcs_bucket", "labels": {"project_id": "shop-prod", "location": "europe-west1"}},
            "timestamp": "2024-05-03T08:00:00.123456Z",
            "severity": "NOTICE",
            "logName": "projects/shop-prod/logs/cloudaudit.googleapis.com%2Factivity"
        });
        let n = GcpNormalizer::new(catalog()).unwrap();
        n.normalize(entry.to_string().as_bytes()).unwrap()
    }

    #[test]
    fn gcp_service_account_key_created() {
        let sa = "projects/-/serviceAccounts/deployer@shop-prod.iam.gserviceaccount.com";
        let req = json!({"@type": "type.googleapis.com/google.iam.admin.v1.CreateServiceAccountKeyRequest", "name": sa, "private_key_type": 2});
        let resp = json!({"@type": "type.googleapis.com/google.iam.admin.v1.ServiceAccountKey",
            "name": "projects/shop-prod/serviceAccounts/deployer@shop-prod.iam.gserviceaccount.com/keys/0123abcd4567",
            "key_algorithm": 2, "key_origin": 2, "key_type": 1});
        let ev = gcp(
            "google.iam.admin.v1.CreateServiceAccountKey",
            "iam.googleapis.com",
            sa,
            "iam.serviceAccountKeys.create",
            req,
            resp,
        );
        let h = hits(&ev);
        assert_eq!(h.iter().map(|h| h.rule).collect::<Vec<_>>(), [Builtin::GcpServiceAccountKeyCreated]);
        assert_eq!(value(&h[0], "serviceAccount"), sa);
        assert_eq!(value(&h[0], "key"), "0123abcd4567");
        let list = gcp(
            "google.iam.admin.v1.ListServiceAccountKeys",
            "iam.googleapis.com",
            sa,
            "iam.serviceAccountKeys.list",
            json!(null),
            json!(null),
        );
        assert!(rules(&list).is_empty());
    }

    #[test]
    fn gcp_policy_binding_all_users_is_public() {
        let bucket = "projects/_/buckets/shop-assets";
        let policy = |member: &str| {
            json!({"@type": "type.googleapis.com/google.iam.v1.SetIamPolicyRequest", "resource": bucket,
            "policy": {"bindings": [{"role": "roles/storage.admin", "members": ["group:ops@example.com"]},
                                    {"role": "roles/storage.objectViewer", "members": [member]}]}})
        };
        let ev = gcp(
            "storage.setIamPermissions",
            "storage.googleapis.com",
            bucket,
            "storage.buckets.setIamPolicy",
            policy("allUsers"),
            json!(null),
        );
        let h = hits(&ev);
        assert_eq!(h.iter().map(|h| h.rule).collect::<Vec<_>>(), [Builtin::ResourceMadePublic]);
        assert_eq!(
            value(&h[0], "exposure"),
            "roles/storage.objectViewer granted to allUsers on projects/_/buckets/shop-assets"
        );
        let project = gcp(
            "SetIamPolicy",
            "cloudresourcemanager.googleapis.com",
            "projects/shop-prod",
            "resourcemanager.projects.setIamPolicy",
            policy("allAuthenticatedUsers"),
            json!(null),
        );
        assert_eq!(rules(&project), [Builtin::ResourceMadePublic]);
        let private = gcp(
            "storage.setIamPermissions",
            "storage.googleapis.com",
            bucket,
            "storage.buckets.setIamPolicy",
            policy("user:bob@example.com"),
            json!(null),
        );
        assert!(rules(&private).is_empty());
    }

    #[test]
    fn gcp_log_sinks_deleted_or_disabled() {
        let sink = "projects/shop-prod/sinks/to-siem";
        let delete = gcp(
            "google.logging.v2.ConfigServiceV2.DeleteSink",
            "logging.googleapis.com",
            sink,
            "logging.sinks.delete",
            json!({"@type": "type.googleapis.com/google.logging.v2.DeleteSinkRequest", "sinkName": sink}),
            json!(null),
        );
        let h = hits(&delete);
        assert_eq!(h.iter().map(|h| h.rule).collect::<Vec<_>>(), [Builtin::LoggingDisabled]);
        assert_eq!(value(&h[0], "change"), format!("log sink deleted: {sink}"));
        let update = |sink_doc: serde_json::Value| {
            gcp(
                "google.logging.v2.ConfigServiceV2.UpdateSink",
                "logging.googleapis.com",
                sink,
                "logging.sinks.update",
                json!({"@type": "type.googleapis.com/google.logging.v2.UpdateSinkRequest", "sinkName": sink, "sink": sink_doc, "updateMask": "disabled"}),
                json!(null),
            )
        };
        assert_eq!(rules(&update(json!({"name": "to-siem", "disabled": true}))), [Builtin::LoggingDisabled]);
        assert!(rules(&update(json!({"name": "to-siem", "filter": "severity>=INFO"}))).is_empty());
    }

    fn okta_fixture() -> Vec<Event> {
        let text = include_str!("../../core/src/idp/testdata/okta/system_log.json");
        let records: Vec<serde_json::Value> = serde_json::from_str(text).unwrap();
        records.iter().map(|r| okta::normalize_value(r, Some("acme.okta.com")).unwrap()).collect()
    }

    #[test]
    fn okta_mfa_removed_and_admin_granted() {
        let events = okta_fixture();
        let by_type = |t: &str| events.iter().find(|e| e.api.operation == t).unwrap();
        let h = hits(by_type("user.mfa.factor.deactivate"));
        assert_eq!(h.iter().map(|h| h.rule).collect::<Vec<_>>(), [Builtin::MfaRemoved]);
        assert!(value(&h[0], "target").contains("bob@example.com"), "{h:?}");
        let h = hits(by_type("user.account.privilege.grant"));
        assert_eq!(h.iter().map(|h| h.rule).collect::<Vec<_>>(), [Builtin::IdpAdminGranted]);
        assert_eq!(value(&h[0], "privilegeGranted"), "Super administrator");
        for quiet in ["user.session.start", "group.user_membership.add", "policy.evaluate_sign_on"] {
            assert!(rules(by_type(quiet)).is_empty(), "{quiet}");
        }
        // A reset of all factors, from the same shape.
        let mut reset: serde_json::Value = serde_json::from_str::<Vec<serde_json::Value>>(include_str!(
            "../../core/src/idp/testdata/okta/system_log.json"
        ))
        .unwrap()[0]
            .clone();
        reset["eventType"] = json!("user.mfa.factor.reset_all");
        reset["uuid"] = json!("reset-1");
        let ev = okta::normalize_value(&reset, None).unwrap();
        assert_eq!(rules(&ev), [Builtin::MfaRemoved]);
        // A denied deactivation removed nothing.
        reset["outcome"] = json!({"result": "DENY", "reason": "policy"});
        let ev = okta::normalize_value(&reset, None).unwrap();
        assert!(rules(&ev).is_empty());
    }

    #[test]
    fn workspace_2sv_off_and_admin_role() {
        let text = include_str!("../../core/src/idp/testdata/workspace/activities.json");
        let events: Vec<Event> = workspace::events_from_export(text.as_bytes()).unwrap().events;
        let by_name = |n: &str| events.iter().find(|e| e.api.operation == n).unwrap();
        assert_eq!(rules(by_name("2sv_disable")), [Builtin::MfaRemoved]);
        let h = hits(by_name("ASSIGN_ROLE"));
        assert_eq!(h.iter().map(|h| h.rule).collect::<Vec<_>>(), [Builtin::IdpAdminGranted]);
        assert_eq!(value(&h[0], "role"), "_SEED_ADMIN_ROLE");
        assert_eq!(value(&h[0], "target"), "bob@example.com");
        for quiet in ["CHANGE_PASSWORD", "login_failure", "authorize"] {
            assert!(rules(by_name(quiet)).is_empty(), "{quiet}");
        }
        // An administrator turning enforcement of 2-Step Verification off.
        let activity = json!({"kind": "admin#reports#activity",
            "id": {"time": "2024-05-03T08:00:00.000Z", "uniqueQualifier": "77", "applicationName": "admin", "customerId": "C01"},
            "actor": {"callerType": "USER", "email": "admin@example.com", "profileId": "1001"},
            "events": [{"type": "SECURITY_SETTINGS", "name": "ENFORCE_STRONG_AUTHENTICATION", "parameters": [
                {"name": "ORG_UNIT_NAME", "value": "/Sales"}, {"name": "NEW_VALUE", "value": "false"}, {"name": "OLD_VALUE", "value": "true"}]}]});
        let evs = workspace::normalize_activity(activity.to_string().as_bytes()).unwrap();
        let h = hits(&evs[0]);
        assert_eq!(h.iter().map(|h| h.rule).collect::<Vec<_>>(), [Builtin::MfaRemoved]);
        assert_eq!(value(&h[0], "enforcement"), "off for /Sales");
        let on = activity.to_string().replace(r#""NEW_VALUE","value":"false""#, r#""NEW_VALUE","value":"true""#);
        assert!(rules(&workspace::normalize_activity(on.as_bytes()).unwrap()[0]).is_empty());
    }

    #[test]
    fn aws_events_are_not_judged_here() {
        let mut ev = grantwatch_core::testing::event("e", grantwatch_types::EventTime(0));
        ev.api.operation = "2sv_disable".into();
        ev.api.service = "login".into();
        let mut out = Vec::new();
        super::single_event_rules(&ev, None, None, &mut out);
        assert!(out.is_empty() && logging_disabled(&ev, None).is_none());
    }
}
