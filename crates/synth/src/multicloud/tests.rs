#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;

use super::*;
use crate::scenario::eval::Labels;

fn small(seed: u64) -> MultiCloudSpec {
    let mut s = MultiCloudSpec::new(seed, 2, 2, 30, 16, 100, 4_000);
    s.aws.events = 1_500;
    s
}

fn make(spec: &MultiCloudSpec) -> (tempfile::TempDir, MultiCloudTruth) {
    let dir = tempfile::tempdir().unwrap();
    let t = generate_multicloud(spec, dir.path()).unwrap();
    (dir, t)
}

fn files(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

fn under(root: &Path, sub: &str) -> Vec<PathBuf> {
    let d = root.join(sub);
    if d.exists() { files(&d) } else { Vec::new() }
}

fn read<T: for<'de> Deserialize<'de>>(p: &Path) -> T {
    let s = std::fs::read_to_string(p).unwrap();
    serde_json::from_str(&s).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn lines<T: for<'de> Deserialize<'de>>(p: &Path) -> Vec<T> {
    std::fs::read_to_string(p)
        .unwrap()
        .lines()
        .enumerate()
        .map(|(i, l)| serde_json::from_str(l).unwrap_or_else(|e| panic!("{}:{}: {e}", p.display(), i + 1)))
        .collect()
}

// ---- small local views of the real formats (only what a reader needs; unknown fields ignored)

#[derive(Deserialize)]
struct OktaProfile {
    login: String,
    email: String,
}
#[derive(Deserialize)]
struct OktaUser {
    id: String,
    status: String,
    profile: OktaProfile,
}
#[derive(Deserialize)]
struct OktaGroupProfile {
    name: String,
}
#[derive(Deserialize)]
struct OktaGroupX {
    id: String,
    #[serde(rename = "type")]
    kind: String,
    profile: OktaGroupProfile,
    members: Vec<String>,
}
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WsUser {
    id: String,
    primary_email: String,
    aliases: Vec<String>,
    is_enrolled_in2_sv: bool,
    last_login_time: String,
    creation_time: String,
    customer_id: String,
}
#[derive(Deserialize)]
struct WsUsers {
    kind: String,
    users: Vec<WsUser>,
}
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct IdcEmail {
    value: String,
    primary: bool,
}
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct IdcUser {
    user_id: String,
    user_name: String,
    emails: Vec<IdcEmail>,
}
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct IdcUsers {
    users: Vec<IdcUser>,
}
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RoleAssignment {
    id: String,
    principal_id: String,
    principal_type: String,
    role_definition_id: String,
    role_definition_name: String,
    scope: String,
}
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RoleDefinition {
    name: String,
    role_name: String,
    role_type: String,
    permissions: Vec<roles::AzurePermission>,
    assignable_scopes: Vec<String>,
}
#[derive(Deserialize)]
struct GraphList {
    #[serde(rename = "@odata.context")]
    context: String,
    value: Vec<Value>,
}
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Mg {
    id: String,
    name: String,
    #[serde(rename = "type")]
    kind: String,
    children: Option<Vec<Mg>>,
}
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AzSub {
    id: String,
    name: String,
    state: String,
    tenant_id: String,
}
#[derive(Deserialize)]
struct Claims(BTreeMap<String, Value>);
#[derive(Deserialize)]
struct Identity {
    claims: Claims,
}
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Activity {
    time: String,
    resource_id: String,
    operation_name: String,
    category: String,
    result_type: String,
    result_signature: String,
    caller_ip_address: String,
    correlation_id: String,
    identity: Identity,
    properties: Value,
}
#[derive(Deserialize)]
struct Binding {
    role: String,
    members: Vec<String>,
}
#[derive(Deserialize)]
struct IamPolicy {
    bindings: Vec<Binding>,
}
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CaiPolicy {
    name: String,
    asset_type: String,
    iam_policy: IamPolicy,
    ancestors: Vec<String>,
}
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CaiData {
    project_number: Option<String>,
    project_id: Option<String>,
}
#[derive(Deserialize)]
struct CaiResourceBody {
    data: CaiData,
}
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CaiResource {
    name: String,
    asset_type: String,
    resource: CaiResourceBody,
    ancestors: Vec<String>,
}
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct GSa {
    name: String,
    email: String,
    project_id: String,
    unique_id: String,
}
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct GKey {
    name: String,
    key_type: String,
    valid_after_time: String,
}
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct GCustomRole {
    name: String,
    included_permissions: Vec<String>,
}
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AuthInfo {
    permission: String,
    granted: bool,
    resource: String,
}
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AuthN {
    principal_email: String,
}
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Proto {
    #[serde(rename = "@type")]
    kind: String,
    service_name: String,
    method_name: String,
    resource_name: String,
    authentication_info: AuthN,
    authorization_info: Vec<AuthInfo>,
    request_metadata: Value,
    status: Value,
}
#[derive(Deserialize)]
struct GLabels {
    project_id: String,
}
#[derive(Deserialize)]
struct GResource {
    #[serde(rename = "type")]
    kind: String,
    labels: GLabels,
}
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AuditEntry {
    log_name: String,
    insert_id: String,
    timestamp: String,
    resource: GResource,
    proto_payload: Proto,
}
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct OktaActor {
    id: String,
    alternate_id: String,
}
#[derive(Deserialize)]
struct OktaOutcome {
    result: String,
}
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct OktaLog {
    uuid: String,
    published: String,
    event_type: String,
    actor: OktaActor,
    outcome: OktaOutcome,
}
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WsId {
    time: String,
    unique_qualifier: String,
    application_name: String,
    customer_id: String,
}
#[derive(Deserialize)]
struct WsActor {
    email: String,
}
#[derive(Deserialize)]
struct WsEvent {
    #[serde(rename = "type")]
    kind: String,
    name: String,
}
#[derive(Deserialize)]
struct WsActivity {
    kind: String,
    id: WsId,
    actor: WsActor,
    events: Vec<WsEvent>,
}

fn ts_secs(s: &str) -> i64 {
    EventTime::parse_rfc3339(s).unwrap_or_else(|| panic!("not a time: {s}")).millis().div_euclid(1000)
}

#[test]
fn files_parse_as_the_real_formats() {
    let spec = small(5);
    let (dir, truth) = make(&spec);
    let root = dir.path();
    let mc = &truth.multicloud;

    // the AWS truth is readable as before
    let aws: GroundTruth = read(&root.join("truth.json"));
    assert_eq!(aws, truth.aws);
    assert_eq!(MultiCloudTruth::load(&root.join("truth.json")).unwrap(), truth);

    let okta: Vec<OktaUser> = read(&root.join("okta/users.json"));
    assert_eq!(okta.len(), mc.humans.len());
    assert!(okta.iter().all(|u| u.id.starts_with("00u") && u.status == "ACTIVE" && u.profile.login == u.profile.email));
    let groups: Vec<OktaGroupX> = read(&root.join("okta/groups.json"));
    let ids: BTreeSet<&str> = okta.iter().map(|u| u.id.as_str()).collect();
    assert!(groups.iter().all(|g| g.id.starts_with("00g") && g.kind == "OKTA_GROUP" && !g.profile.name.is_empty()));
    assert!(groups.iter().flat_map(|g| &g.members).all(|m| ids.contains(m.as_str())));
    let ws: WsUsers = read(&root.join("workspace/users.json"));
    assert_eq!(ws.kind, "admin#directory#users");
    for u in &ws.users {
        assert_eq!(u.id.len(), 21);
        assert_eq!(u.primary_email, u.primary_email.to_ascii_lowercase());
        assert_eq!(u.customer_id, mc.workspace_customer);
        ts_secs(&u.last_login_time);
        ts_secs(&u.creation_time);
        assert!(u.aliases.is_empty());
    }
    assert!(ws.users.iter().any(|u| u.is_enrolled_in2_sv) && ws.users.iter().any(|u| !u.is_enrolled_in2_sv));
    let idc: IdcUsers = read(&root.join("identity-center/users.json"));
    assert!(!idc.users.is_empty());
    for u in &idc.users {
        assert!(u.user_id.len() > 20 && u.emails.len() == 1 && u.emails[0].primary && u.emails[0].value == u.user_name);
    }

    // Azure
    let subs: Vec<AzSub> = read(&root.join("azure/subscriptions.json"));
    assert_eq!(subs.iter().map(|s| s.id.clone()).collect::<Vec<_>>(), mc.subscriptions);
    assert!(subs.iter().all(|s| s.state == "Enabled" && s.tenant_id == mc.azure_tenant && !s.name.is_empty()));
    let mg: Mg = read(&root.join("azure/management-groups.json"));
    assert_eq!(mg.name, mc.azure_tenant);
    fn walk(m: &Mg, subs: &mut Vec<String>) {
        for c in m.children.iter().flatten() {
            if c.kind == "/subscriptions" {
                subs.push(c.name.clone());
                assert_eq!(c.id, format!("/subscriptions/{}", c.name));
            } else {
                assert_eq!(c.kind, "Microsoft.Management/managementGroups");
                assert!(c.id.ends_with(&c.name));
                walk(c, subs);
            }
        }
    }
    let mut under_mg = Vec::new();
    walk(&mg, &mut under_mg);
    under_mg.sort();
    let mut want = mc.subscriptions.clone();
    want.sort();
    assert_eq!(under_mg, want);
    let defs: Vec<RoleDefinition> = read(&root.join("azure/role-definitions.json"));
    assert_eq!(defs.len(), 1);
    assert_eq!(defs[0].role_type, "CustomRole");
    assert!(defs[0].permissions[0].actions.iter().any(|a| a.contains('*')));
    assert!(!defs[0].assignable_scopes.is_empty() && !defs[0].role_name.is_empty() && defs[0].name.len() == 36);
    let ras: Vec<RoleAssignment> = read(&root.join("azure/role-assignments.json"));
    assert!(ras.len() > 10);
    for r in &ras {
        let (pre, guid) = r.role_definition_id.rsplit_once('/').unwrap();
        assert!(
            pre.starts_with("/subscriptions/") && pre.ends_with("/providers/Microsoft.Authorization/roleDefinitions")
        );
        assert_eq!(guid.len(), 36);
        assert!(mc.roles.get(guid).is_some_and(|x| x.name == r.role_definition_name), "{}", r.role_definition_name);
        assert!(["User", "Group", "ServicePrincipal"].contains(&r.principal_type.as_str()));
        assert!(r.id.starts_with(&r.scope) && r.principal_id.len() == 36);
        assert!(r.scope.starts_with("/subscriptions/") || r.scope.starts_with("/providers/Microsoft.Management/"));
    }
    for (f, what) in [("users", "users"), ("groups", "groups(members())"), ("service-principals", "servicePrincipals")]
    {
        let l: GraphList = read(&root.join(format!("azure/{f}.json")));
        assert_eq!(l.context, format!("https://graph.microsoft.com/v1.0/$metadata#{what}"));
        assert!(!l.value.is_empty(), "{f}");
        assert!(l.value.iter().all(|v| v["id"].as_str().is_some_and(|s| s.len() == 36)));
    }
    let mut az_records = 0u64;
    let mut corr: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for p in under(root, "azure/activity") {
        assert_eq!(p.file_name().unwrap(), "PT1H.json");
        let recs: Vec<Activity> = lines(&p);
        let mut prev = String::new();
        for r in recs {
            az_records += 1;
            assert_eq!(r.category, "Administrative");
            assert_eq!(r.operation_name, r.operation_name.to_ascii_uppercase());
            assert_eq!(r.resource_id, r.resource_id.to_ascii_uppercase());
            assert!(r.resource_id.starts_with("/SUBSCRIPTIONS/"));
            assert!(["Start", "Success", "Failure"].contains(&r.result_type.as_str()));
            assert!(!r.result_signature.is_empty() && !r.caller_ip_address.is_empty());
            let c = &r.identity.claims.0;
            assert!(c.contains_key("http://schemas.microsoft.com/identity/claims/objectidentifier"));
            assert!(
                c.contains_key("http://schemas.xmlsoap.org/ws/2005/05/identity/claims/upn") || c.contains_key("appid")
            );
            assert_eq!(r.properties["eventCategory"], "Administrative");
            assert!(r.time.len() == 28 && r.time >= prev, "{} after {prev}", r.time);
            prev = r.time.clone();
            corr.entry(r.correlation_id).or_default().push(r.result_type);
        }
    }
    assert_eq!(az_records, mc.azure_records);
    assert_eq!(corr.len() as u64, mc.azure_operations);
    assert!(corr.values().any(|v| v == &["Start", "Success"]), "Start + Success pairs");
    assert!(corr.values().all(|v| v.len() == 1 && v[0] != "Start" || v.len() == 2 && v[0] == "Start"));

    // GCP
    let pols: Vec<CaiPolicy> = lines(&root.join("gcp/iam-policies.jsonl"));
    let mut kinds = BTreeSet::new();
    for p in &pols {
        kinds.insert(p.asset_type.as_str());
        assert!(p.name.starts_with("//"));
        assert_eq!(p.ancestors.last().unwrap(), &mc.gcp_organization);
        assert!(p.iam_policy.bindings.iter().all(|b| b.role.starts_with("roles/") || b.role.contains("/roles/")));
        assert!(p.iam_policy.bindings.iter().all(|b| !b.members.is_empty()));
    }
    assert_eq!(
        kinds,
        BTreeSet::from([
            "cloudresourcemanager.googleapis.com/Organization",
            "cloudresourcemanager.googleapis.com/Folder",
            "cloudresourcemanager.googleapis.com/Project",
            "storage.googleapis.com/Bucket"
        ])
    );
    let res: Vec<CaiResource> = lines(&root.join("gcp/projects.jsonl"));
    let mut number_to_id = BTreeMap::new();
    for r in &res {
        assert!(r.name.starts_with("//cloudresourcemanager.googleapis.com/") && !r.ancestors.is_empty());
        if r.asset_type == "cloudresourcemanager.googleapis.com/Project" {
            number_to_id
                .insert(r.resource.data.project_number.clone().unwrap(), r.resource.data.project_id.clone().unwrap());
        }
    }
    assert_eq!(number_to_id.values().cloned().collect::<BTreeSet<_>>(), mc.projects.iter().cloned().collect());
    for p in pols.iter().filter(|p| p.asset_type.ends_with("/Project")) {
        assert!(number_to_id.contains_key(p.name.rsplit('/').next().unwrap()));
    }
    let sas: Vec<GSa> = read(&root.join("gcp/service-accounts.json"));
    assert!(
        sas.iter()
            .all(|s| s.name == format!("projects/{}/serviceAccounts/{}", s.project_id, s.email)
                && s.unique_id.len() == 21)
    );
    let keys: Vec<GKey> = read(&root.join("gcp/service-account-keys.json"));
    assert!(
        keys.iter()
            .all(|k| ["USER_MANAGED", "SYSTEM_MANAGED"].contains(&k.key_type.as_str()) && k.name.contains("/keys/"))
    );
    keys.iter().for_each(|k| {
        ts_secs(&k.valid_after_time);
    });
    let customs: Vec<GCustomRole> = read(&root.join("gcp/custom-roles.json"));
    assert_eq!(customs.len(), 1);
    assert!(customs[0].name.starts_with("organizations/") && customs[0].included_permissions.len() == 6);
    let mut gcp_records = 0u64;
    for p in under(root, "gcp/audit") {
        let project = p.parent().unwrap().file_name().unwrap().to_str().unwrap().to_string();
        let day = p.file_stem().unwrap().to_str().unwrap().to_string();
        let es: Vec<AuditEntry> = lines(&p);
        for e in es {
            gcp_records += 1;
            assert_eq!(e.resource.labels.project_id, project);
            assert!(e.timestamp.starts_with(&day));
            assert!(
                e.log_name == format!("projects/{project}/logs/cloudaudit.googleapis.com%2Factivity")
                    || e.log_name == format!("projects/{project}/logs/cloudaudit.googleapis.com%2Fdata_access")
            );
            let pp = &e.proto_payload;
            assert_eq!(pp.kind, "type.googleapis.com/google.cloud.audit.AuditLog");
            assert!(
                pp.service_name.ends_with(".googleapis.com")
                    && !pp.method_name.is_empty()
                    && !pp.resource_name.is_empty()
            );
            assert!(pp.authentication_info.principal_email.contains('@'));
            assert!(pp.authorization_info.len() == 1 && pp.authorization_info[0].granted);
            assert!(!pp.authorization_info[0].resource.is_empty() && pp.authorization_info[0].permission.contains('.'));
            assert!(pp.request_metadata["callerIp"].is_string() && pp.status.is_object());
            assert!(!e.insert_id.is_empty() && !e.resource.kind.is_empty());
        }
    }
    assert_eq!(gcp_records, mc.gcp_records);

    // identity-provider logs
    let ol: Vec<OktaLog> = lines(&root.join("okta/system-log.jsonl"));
    assert_eq!(ol.len() as u64, mc.okta_events);
    assert!(
        ol.iter().all(|e| ids.contains(e.actor.id.as_str()) && e.uuid.len() == 36 && !e.actor.alternate_id.is_empty())
    );
    assert!(ol.iter().all(|e| ["SUCCESS", "FAILURE"].contains(&e.outcome.result.as_str())));
    assert!(ol.windows(2).all(|w| w[0].published <= w[1].published));
    assert!(ol.iter().filter(|e| e.event_type == "user.mfa.factor.deactivate").count() == 1);
    let wa: Vec<WsActivity> = lines(&root.join("workspace/activities.jsonl"));
    assert_eq!(wa.len() as u64, mc.workspace_events);
    assert!(wa.iter().all(|a| a.kind == "admin#reports#activity" && a.id.customer_id == mc.workspace_customer));
    assert!(
        wa.iter().all(|a| !a.id.unique_qualifier.is_empty() && a.actor.email.contains('@') && !a.events.is_empty())
    );
    assert!(wa.windows(2).all(|w| w[0].id.time <= w[1].id.time));
    assert_eq!(
        wa.iter()
            .filter(|a| a.id.application_name == "user_accounts"
                && a.events[0].kind == "2sv_change"
                && a.events[0].name == "2sv_disable")
            .count(),
        1
    );

    let labels = Labels::load(&root.join("labels.jsonl")).unwrap();
    assert_eq!(labels.instances, mc.labels);
}

#[test]
fn same_spec_same_bytes() {
    let spec = small(9);
    let (a, ta) = make(&spec);
    let (b, tb) = make(&spec);
    assert_eq!(ta, tb);
    let fa = files(a.path());
    let fb = files(b.path());
    let rel =
        |root: &Path, v: &[PathBuf]| v.iter().map(|p| p.strip_prefix(root).unwrap().to_path_buf()).collect::<Vec<_>>();
    assert_eq!(rel(a.path(), &fa), rel(b.path(), &fb));
    for (x, y) in fa.iter().zip(&fb) {
        assert!(std::fs::read(x).unwrap() == std::fs::read(y).unwrap(), "{}", x.display());
    }
    let (c, _) = make(&small(10));
    assert!(
        std::fs::read(a.path().join("azure/role-assignments.json")).unwrap()
            != std::fs::read(c.path().join("azure/role-assignments.json")).unwrap()
    );
}

/// Recounts, from the written logs alone, what each identity used, and checks the truth against it
/// and against the role data.
#[test]
fn truth_matches_the_logs_and_the_roles() {
    let spec = small(21);
    let (dir, truth) = make(&spec);
    let root = dir.path();
    let mc = &truth.multicloud;
    let cutoff = mc.as_of.millis().div_euclid(1000) - i64::from(mc.lookback_days) * 86_400;
    let by_uid: BTreeMap<&str, &CloudIdentity> = mc.identities.iter().map(|i| (i.uid.as_str(), i)).collect();
    assert_eq!(by_uid.len(), mc.identities.len(), "uids are unique");

    // usage recounted: uid -> (operation as logged, latest time)
    let mut seen: BTreeMap<String, BTreeMap<String, i64>> = BTreeMap::new();
    let mut unmapped = 0u64;
    for p in under(root, "azure/activity") {
        for r in lines::<Activity>(&p) {
            let sub = r.resource_id.split('/').nth(2).unwrap().to_ascii_lowercase();
            let oid =
                r.identity.claims.0["http://schemas.microsoft.com/identity/claims/objectidentifier"].as_str().unwrap();
            let uid = format!("azure:/subscriptions/{sub}/principals/{oid}");
            let ident = by_uid.get(uid.as_str()).unwrap_or_else(|| panic!("unknown actor {uid}"));
            let granted = mc.granted(ident);
            let canon = granted.iter().find(|g| g.eq_ignore_ascii_case(&r.operation_name));
            let Some(op) = canon else {
                assert_eq!(r.operation_name, "MICROSOFT.COMPUTE/VIRTUALMACHINES/PERFORMMAINTENANCE/ACTION");
                unmapped += u64::from(r.result_type != "Start");
                continue;
            };
            let t = ts_secs(&r.time);
            let e = seen.entry(uid).or_default().entry(op.clone()).or_insert(t);
            *e = (*e).max(t);
        }
    }
    assert_eq!(unmapped, mc.unmapped_injected);
    assert!(unmapped >= 1);
    for p in under(root, "gcp/audit") {
        for e in lines::<AuditEntry>(&p) {
            let email = &e.proto_payload.authentication_info.principal_email;
            let kind = if email.ends_with("gserviceaccount.com") { "serviceAccount" } else { "user" };
            let uid = format!("gcp:projects/{}/{kind}:{email}", e.resource.labels.project_id);
            assert!(by_uid.contains_key(uid.as_str()), "unknown actor {uid}");
            let t = ts_secs(&e.timestamp);
            let x = seen
                .entry(uid)
                .or_default()
                .entry(e.proto_payload.authorization_info[0].permission.clone())
                .or_insert(t);
            *x = (*x).max(t);
        }
    }
    let mut active = 0;
    for i in &mc.identities {
        let used: Vec<String> = seen
            .get(&i.uid)
            .map(|m| m.iter().filter(|&(_, &t)| t > cutoff).map(|(o, _)| o.clone()).collect())
            .unwrap_or_default();
        assert_eq!(i.used, used, "{}", i.uid);
        let granted = mc.granted(i);
        assert_eq!(granted.len(), i.granted_count);
        assert!(i.used.iter().all(|u| granted.contains(u)), "{} uses what it is not granted", i.uid);
        assert_eq!(mc.unused(i).len(), i.unused_count);
        assert_eq!(i.inactive, i.kind != "group" && i.events_in_lookback == 0, "{}", i.uid);
        if !i.used.is_empty() {
            active += 1;
            assert!(!i.inactive);
        }
        // super: Owner at the subscription or above / roles/owner at the project or above
        let owner = i.grants.iter().any(|g| !g.scoped && (g.role_name == "Owner" || g.role_name == "roles/owner"));
        assert_eq!(i.super_identity, owner, "{}", i.uid);
    }
    assert!(active > 20, "{active} active identities");
    assert!(mc.identities.iter().any(|i| i.inactive), "some identities are inactive");

    // roles, computed from the embedded data
    let az = roles::AzureRoles::load().unwrap();
    let role = |n: &str| mc.roles.values().find(|r| r.name == n).unwrap_or_else(|| panic!("{n}"));
    assert_eq!(role("Owner").operations.len(), az.ops.len());
    let reader = role("Reader");
    assert!(reader.operations.len() > 1000);
    assert!(reader.operations.iter().all(|o| o.to_ascii_lowercase().ends_with("/read")), "a Reader only reads");
    assert!(reader.data_operations.is_empty());
    let contrib = role("Contributor");
    assert!(
        !contrib.operations.iter().any(|o| o.eq_ignore_ascii_case("Microsoft.Authorization/roleAssignments/write"))
    );
    assert!(contrib.operations.iter().any(|o| o == "Microsoft.Compute/virtualMachines/write"));
    assert!(
        role("User Access Administrator")
            .operations
            .iter()
            .any(|o| o == "Microsoft.Authorization/roleAssignments/write")
    );
    let blob = role("Storage Blob Data Reader");
    assert_eq!(blob.data_operations, vec!["Microsoft.Storage/storageAccounts/blobServices/containers/blobs/read"]);
    let custom = role("VM Operator (custom)");
    assert!(custom.custom);
    assert!(custom.operations.iter().any(|o| o == "Microsoft.Network/networkSecurityGroups/read"));
    assert!(!custom.operations.iter().any(|o| o.eq_ignore_ascii_case("Microsoft.Network/virtualNetworks/read")));
    assert!(custom.operations.iter().any(|o| o == "Microsoft.Compute/virtualMachines/start/action"));
    let viewer = role("roles/viewer");
    // (roles/viewer does include some writes, e.g. bigquery.jobs.create: its set is the role's list)
    assert!(viewer.operations.iter().any(|o| o == "bigquery.jobs.create"));
    assert!(!viewer.operations.iter().any(|o| o.ends_with(".setIamPolicy")));
    assert!(role("roles/owner").operations.len() > role("roles/editor").operations.len());

    // kinds of grants
    let reader_only = mc
        .identities
        .iter()
        .find(|i| i.cloud == Cloud::Azure && !i.grants.is_empty() && i.grants.iter().all(|g| g.role_name == "Reader"))
        .expect("a Reader-only identity");
    assert!(mc.granted(reader_only).iter().all(|o| o.to_ascii_lowercase().ends_with("/read")));
    assert!(reader_only.used.is_empty(), "an Activity Log never shows reads");
    let inherited = mc.identities.iter().filter(|i| i.grants.iter().any(|g| g.inherited)).count();
    assert!(inherited > 0);
    assert!(mc.identities.iter().any(|i| {
        i.grants
            .iter()
            .any(|g| g.scope.starts_with("/providers/Microsoft.Management/managementGroups/") && g.role_name == "Owner")
            && i.super_identity
    }));
    let group = mc.identities.iter().find(|i| i.kind == "group").expect("a group");
    assert!(!group.inactive && group.events == 0);
    let via = group.name.clone();
    assert!(
        mc.identities.iter().any(|i| i.kind == "user" && i.grants.iter().any(|g| g.via_group.as_deref() == Some(&via)))
    );
    let bucket_only = mc
        .identities
        .iter()
        .find(|i| {
            i.cloud == Cloud::Gcp && i.grants.iter().all(|g| g.scoped && g.scope.starts_with("projects/_/buckets/"))
        })
        .expect("an identity with a bucket-level binding only");
    assert!(bucket_only.used.iter().all(|u| u.starts_with("storage.")));
    assert!(mc.identities.iter().any(|i| i.cloud == Cloud::Azure && i.grants.iter().any(|g| g.scoped)));

    // humans and links
    let okta: Vec<OktaUser> = read(&root.join("okta/users.json"));
    let okta_by_id: BTreeMap<&str, &OktaUser> = okta.iter().map(|u| (u.id.as_str(), u)).collect();
    let mut aws_tags: BTreeMap<String, String> = BTreeMap::new();
    for p in
        under(root, "iam").into_iter().filter(|p| !p.file_name().unwrap().to_str().unwrap().starts_with("access-keys"))
    {
        let doc: Value = read(&p);
        for u in doc["UserDetailList"].as_array().unwrap() {
            for t in u["Tags"].as_array().unwrap() {
                if t["Key"] == "email" {
                    aws_tags.insert(u["Arn"].as_str().unwrap().into(), t["Value"].as_str().unwrap().into());
                }
            }
        }
    }
    assert!(!aws_tags.is_empty(), "IAM users carry an email tag");
    let mut two_spellings = 0;
    for h in &mc.humans {
        assert_eq!(h.email, h.email.to_ascii_lowercase());
        let okta_uid = h.identities.iter().find(|u| u.starts_with("okta:")).expect("an Okta user");
        let u = okta_by_id[okta_uid.rsplit('/').next().unwrap()];
        assert!(u.profile.login.eq_ignore_ascii_case(&h.email));
        if let Some(alt) = h.other_spellings.first() {
            two_spellings += 1;
            assert!(alt.eq_ignore_ascii_case(&h.email) && alt != &h.email);
            assert_eq!(&u.profile.login, alt);
        }
        for id in &h.identities {
            if id.starts_with("arn:aws:iam::") {
                assert!(aws_tags[id].eq_ignore_ascii_case(&h.email));
            } else if let Some(i) = by_uid.get(id.as_str()) {
                assert_eq!(i.human.as_deref(), Some(h.email.as_str()));
            } else {
                assert!(id.starts_with("okta:") || id.starts_with("workspace:"), "{id}");
            }
        }
    }
    assert!(two_spellings > 0);
    for (arn, email) in &aws_tags {
        let h = mc.humans.iter().find(|h| h.email.eq_ignore_ascii_case(email)).unwrap();
        assert!(h.identities.contains(arn));
    }
    for i in mc.identities.iter().filter(|i| i.human.is_some()) {
        let h = mc.humans.iter().find(|h| Some(&h.email) == i.human.as_ref()).unwrap();
        assert!(h.identities.contains(&i.uid));
    }
    assert!(
        mc.humans.iter().any(|h| h
            .identities
            .iter()
            .filter(|u| u.starts_with("azure:") || u.starts_with("gcp:"))
            .count()
            >= 2)
    );
    assert!(mc.humans.iter().any(|h| !h.aws_sso_roles.is_empty() && h.identity_center_user_id.is_some()));

    // attacks: labeled, logged, and visible in the snapshot
    let techniques: Vec<&str> = mc.labels.iter().map(|l| l.technique.as_str()).collect();
    assert_eq!(techniques.len(), 6, "{techniques:?}");
    let all_text: String = ["azure/activity", "gcp/audit", "okta", "workspace"]
        .iter()
        .flat_map(|d| under(root, d))
        .map(|p| std::fs::read_to_string(p).unwrap())
        .collect();
    for l in &mc.labels {
        assert!(!l.event_ids.is_empty());
        assert!(l.start.millis() > cutoff * 1000 && l.end <= mc.as_of);
        for id in &l.event_ids {
            assert!(all_text.contains(id.as_str()), "{} event {id} not written", l.id);
        }
    }
    let owner_label = &mc.labels[0];
    assert!(owner_label.description.contains("assigns Owner"));
    let diag_label = &mc.labels[1];
    assert!(
        by_uid[diag_label.identity.as_str()].used.iter().any(|u| u == "Microsoft.Insights/diagnosticSettings/delete")
    );
    let target = mc
        .identities
        .iter()
        .find(|i| i.kind == "service_account" && i.super_identity && i.account == owner_label.account)
        .expect("the service principal made Owner");
    assert!(target.grants.iter().any(|g| g.role_name == "Owner"));
    assert!(
        by_uid[owner_label.identity.as_str()].used.iter().any(|u| u == "Microsoft.Authorization/roleAssignments/write")
    );
    let pols: Vec<CaiPolicy> = lines(&root.join("gcp/iam-policies.jsonl"));
    assert!(pols.iter().any(|p| p.asset_type == "storage.googleapis.com/Bucket"
        && p.iam_policy.bindings.iter().any(|b| b.members == ["allUsers"])));
    let keys: Vec<GKey> = read(&root.join("gcp/service-account-keys.json"));
    let key_label = mc.labels.iter().find(|l| l.description.contains("user-managed key")).unwrap();
    assert!(
        keys.iter()
            .any(|k| k.key_type == "USER_MANAGED" && ts_secs(&k.valid_after_time) * 1000 == key_label.start.millis())
    );
    let ws: WsUsers = read(&root.join("workspace/users.json"));
    let sv_label = mc.labels.iter().find(|l| l.description.contains("2-step")).unwrap();
    let ws_id = sv_label.identity.rsplit('/').next().unwrap();
    assert!(!ws.users.iter().find(|u| u.id == ws_id).unwrap().is_enrolled_in2_sv);
    assert!(mc.dropped_after_diagnostic_delete < mc.azure_operations);
}

#[test]
fn spec_is_validated() {
    let mut s = small(1);
    s.aws.days = 30;
    assert!(matches!(generate_multicloud(&s, Path::new("/nonexistent/never")), Err(SynthError::InvalidSpec(_))));
    let mut s = small(1);
    s.identities_per_scope = 1;
    assert!(matches!(generate_multicloud(&s, Path::new("/nonexistent/never")), Err(SynthError::InvalidSpec(_))));
}
